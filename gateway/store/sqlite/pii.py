"""Retention purge on SQLite (erasure: erasure.py; key rotation: ops/keys.py).

Plain functions of a connection, run by `SQLiteStore` on its writer thread,
each in one short transaction. Removed payloads are overwritten in the file
too: the connection sets `secure_delete`, and the store checkpoints the WAL
after an erasure or a purge so old page images do not linger there.
"""

from __future__ import annotations

import sqlite3
import time

import msgspec

from gateway.lifecycle import OPEN_SQL
from gateway.schema import NormalizedProfile
from gateway.store.base import PurgeResult
from gateway.store.pii import (
    REMOVED,
)

_decode_profile = msgspec.json.Decoder(NormalizedProfile).decode
# What a purged write's deliveries keep of a backend's error text.
PURGED_ERROR = "removed by retention"


def purge_step(
    conn: sqlite3.Connection,
    cutoff: float,
    write_after: int | None,
    event_after: int | None,
    span: int,
) -> tuple[PurgeResult, int | None, int | None]:
    """One span of each table not done yet (None: done); returns what it
    removed and where each table goes on (None: past its last row or the cutoff)."""
    now = time.time()
    writes: list[tuple[int]] = []
    events = 0
    if write_after is not None:
        writes = conn.execute(
            "UPDATE profile_writes SET body = ?, key_id = NULL, removed = 'purged', removed_at = ?"
            " WHERE id > ? AND id <= ? AND removed IS NULL AND received_at < ?"
            # Not expanded yet: not delivered yet either (expand makes no
            # deliveries for a removed write, so it must not be removed first).
            " AND request_id NOT IN (SELECT request_id FROM expand_queue)"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.write_id = profile_writes.id"
            f"   AND (d.state IN {OPEN_SQL} OR d.updated_at >= ?))"
            " RETURNING id",
            (REMOVED, now, write_after, write_after + span, cutoff, cutoff),
        ).fetchall()
        # Their lookup tags go too (a webhook this late confirms nothing useful),
        # and backends' error texts, which may quote the profile.
        conn.executemany(
            "UPDATE deliveries SET match_key = NULL,"
            f" last_error = CASE WHEN last_error IS NULL THEN NULL ELSE '{PURGED_ERROR}' END"
            " WHERE write_id = ?",
            writes,
        )
        write_after = _next(conn, "profile_writes", write_after + span, cutoff)
    if event_after is not None:
        events = conn.execute(
            "UPDATE webhook_events SET body = ?, key_id = NULL, match_key = NULL, removed_at = ?"
            " WHERE id > ? AND id <= ? AND removed_at IS NULL AND state != 'received'"
            " AND received_at < ?",
            (REMOVED, now, event_after, event_after + span, cutoff),
        ).rowcount
        event_after = _next(conn, "webhook_events", event_after + span, cutoff)
    return PurgeResult(writes=len(writes), webhook_events=events), write_after, event_after


def purge_keys_step(conn: sqlite3.Connection, cutoff: float, span: int) -> int:
    """Up to `span` Idempotency-Key records older than the cutoff (the caller's
    key may hold an email): a retry that late is not a retry."""
    return conn.execute(
        "DELETE FROM idempotency_keys WHERE rowid IN"
        " (SELECT rowid FROM idempotency_keys WHERE created_at < ? LIMIT ?)",
        (cutoff, span),
    ).rowcount


def _next(conn: sqlite3.Connection, table: str, after: int, cutoff: float) -> int | None:
    # Ids grow with arrival time, so the first row past the cutoff ends the walk.
    row = conn.execute(
        f"SELECT received_at FROM {table} WHERE id > ? ORDER BY id LIMIT 1", (after,)
    ).fetchone()
    return after if row is not None and row[0] < cutoff else None
