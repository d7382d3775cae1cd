"""Storing accepted writes on SQLite, many requests per statement.

The writer thread hands over every queued request at once, and a few multi-row
INSERT statements store them all. Under load the event loop is busy validating
the next requests, and Python's sqlite3 releases the GIL for every statement
step (every row, even in `executemany`); winning it back from the busy loop
thread is what costs, so steps per commit, not rows, set the pace (see
bench/write_path.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.crypto import PLAINTEXT, Sealer
from gateway.store.base import AcceptResult, IdempotencyConflict, NewRequest
from gateway.store.pii import write_aad

_encode = msgspec.json.Encoder().encode

Outcome = AcceptResult | Exception
# SQLite allows 32766 parameters per statement; stay well below.
_MAX_PARAMS = 30000


def insert_rows(
    conn: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]], tail: str = ""
) -> None:
    """`INSERT INTO t (a, b) VALUES (?, ?), (?, ?), ...` in as few statements as fit."""
    if not rows:
        return
    width = len(rows[0])
    per_statement = max(1, _MAX_PARAMS // width)
    one = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values = ", ".join([one] * len(chunk))
        conn.execute(f"{head} VALUES {values}{tail}", [v for row in chunk for v in row])


def _replay(conn: sqlite3.Connection, request_id: str) -> AcceptResult:
    count, targets = conn.execute(
        "SELECT profile_count, targets FROM requests WHERE id = ?", (request_id,)
    ).fetchone()
    return AcceptResult(request_id, count, json.loads(targets), replayed=True)


def _check_keys(conn: sqlite3.Connection, reqs: Sequence[NewRequest]) -> list[Outcome | None]:
    """Idempotency first: a replay or a conflict, or None for a request to store."""
    outcomes: list[Outcome | None] = [None] * len(reqs)
    first_in_batch: dict[tuple[str, str], NewRequest] = {}
    for i, req in enumerate(reqs):
        if req.idempotency_key is None:
            continue
        scope = (req.app, req.idempotency_key)
        earlier = first_in_batch.get(scope)
        if earlier is not None:  # the same key twice in one commit
            outcomes[i] = (
                AcceptResult(earlier.request_id, len(earlier.profiles), list(earlier.targets), True)
                if earlier.body_hash == req.body_hash
                else IdempotencyConflict(earlier.request_id)
            )
            continue
        row = conn.execute(
            "SELECT body_hash, request_id FROM idempotency_keys WHERE app = ? AND key = ?", scope
        ).fetchone()
        if row is None:
            first_in_batch[scope] = req
        elif row[0] == req.body_hash:
            outcomes[i] = _replay(conn, row[1])
        else:
            outcomes[i] = IdempotencyConflict(row[1])
    return outcomes


def accept_many(
    conn: sqlite3.Connection,
    reqs: Sequence[NewRequest],
    sealer: Sealer = PLAINTEXT,
    clock: Clock = SYSTEM_CLOCK,
) -> list[Outcome]:
    """Store every request that is not a replay or conflict; one outcome each.
    Runs inside the caller's transaction."""
    outcomes = _check_keys(conn, reqs)
    fresh = [r for r, o in zip(reqs, outcomes, strict=True) if o is None]
    now = clock.now()
    # Ids are assigned here rather than read back row by row: the transaction
    # holds SQLite's write lock, so nobody else can take them.
    (last,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM profile_writes").fetchone()
    writes: list[tuple[Any, ...]] = []
    for req in fresh:
        for position, profile in enumerate(req.profiles):
            last += 1
            body, key_id = sealer.seal(_encode(profile), write_aad(req.request_id, position))
            writes.append(
                (last, req.request_id, position, profile.external_id, body, key_id, req.received_at)
            )
    insert_rows(
        conn,
        "INSERT INTO requests"
        " (id, app, received_at, targets, profile_count, lane, resend, traceparent)",
        [
            (
                r.request_id,
                r.app,
                r.received_at,
                json.dumps(r.targets),
                len(r.profiles),
                r.lane,
                int(r.resend),
                r.traceparent,
            )
            for r in fresh
        ],
    )
    insert_rows(
        conn,
        "INSERT INTO profile_writes"
        " (id, request_id, position, external_id, body, key_id, received_at)",
        writes,
    )
    # The deliveries are made off the request path (gateway/store/expand.py).
    insert_rows(conn, "INSERT INTO expand_queue (request_id)", [(r.request_id,) for r in fresh])
    insert_rows(
        conn,
        "INSERT INTO idempotency_keys (app, key, body_hash, request_id, created_at)",
        [
            (r.app, r.idempotency_key, r.body_hash, r.request_id, now)
            for r in fresh
            if r.idempotency_key is not None
        ],
    )
    return [
        o if o is not None else AcceptResult(r.request_id, len(r.profiles), list(r.targets))
        for r, o in zip(reqs, outcomes, strict=True)
    ]
