"""The delivery queue on SQLite: claim with leases, record outcomes, dead letters.

Plain functions of a connection, run by `SQLiteStore` on its writer thread (for
writes) or a reader thread (for reads), so each runs inside one transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.crypto import PLAINTEXT, Sealer
from gateway.lifecycle import DELIVERED_SQL, DUE_SQL, OPEN_SQL, state_is
from gateway.schema import Backend
from gateway.store.base import (
    Claim,
    DeliveryResult,
    DeliveryState,
    ReplayResult,
)
from gateway.store.expand import expand
from gateway.store.pii import open_claims, seal_error
from gateway.store.sqlite import plans
from gateway.store.sqlite.accept import insert_rows

_COLUMNS = """
SELECT d.id, d.external_id, d.attempts + 1, d.created_at, w.body, b.backend_id,
       w.request_id, w.position
FROM deliveries d
JOIN profile_writes w ON w.id = d.write_id
LEFT JOIN backend_ids b ON b.external_id = d.external_id AND b.backend = d.backend
"""
# No earlier write of the same person to the same backend is still open.
_HEAD = f"""
NOT EXISTS (
    SELECT 1 FROM deliveries e INDEXED BY deliveries_open_person
    WHERE e.backend = d.backend AND e.external_id = d.external_id
      AND e.id < d.id AND e.state IN {OPEN_SQL})
"""
# Both walk a partial index in order and stop at the limit, so a claim costs
# about `limit` rows (plus any held back by the ordering rule), however long
# the queue is.
_EXPIRED = f"""{_COLUMNS}
WHERE d.id IN (
    SELECT id FROM deliveries INDEXED BY deliveries_lease
    WHERE backend = :backend AND state = 'in_flight' AND lease_expires_at <= :now
    ORDER BY lease_expires_at LIMIT :limit)
  AND {_HEAD}
"""
_DUE = f"""{_COLUMNS}
WHERE d.rowid IN (
    SELECT c.id FROM deliveries c INDEXED BY deliveries_due_at
    WHERE c.backend = :backend AND c.state IN {DUE_SQL}
      AND c.next_attempt_at <= :now
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e INDEXED BY deliveries_open_person
          WHERE e.backend = c.backend AND e.external_id = c.external_id
            AND e.id < c.id AND e.state IN {OPEN_SQL})
    ORDER BY c.next_attempt_at LIMIT :limit)
"""


def claim(
    conn: sqlite3.Connection,
    backend: Backend,
    limit: int,
    owner: str,
    lease_seconds: float,
    sealer: Sealer = PLAINTEXT,
    clock: Clock = SYSTEM_CLOCK,
) -> list[Claim]:
    now = clock.now()
    # Accepted requests get their deliveries first (gateway/store/expand.py).
    plans.run(conn, expand(now))
    params = {"backend": backend, "now": now, "limit": limit}
    # Expired leases first: those writes are the oldest.
    rows = conn.execute(_EXPIRED, params).fetchall()
    if len(rows) < limit:
        params["limit"] = limit - len(rows)
        rows += conn.execute(_DUE, params).fetchall()
    if not rows:
        return []
    # One statement for the whole claim: each statement step hands the GIL back
    # and forth with the event loop (see sqlite_accept).
    marks = ", ".join("?" * len(rows))
    conn.execute(
        "UPDATE deliveries SET state = 'in_flight', lease_owner = ?, lease_expires_at = ?,"
        f" attempts = attempts + 1, updated_at = ? WHERE id IN ({marks})",
        [owner, now + lease_seconds, now, *(r[0] for r in rows)],
    )
    claims, unsendable = open_claims(rows, sealer)
    conn.executemany(
        "UPDATE deliveries SET state = 'failed', last_error = ?, lease_owner = NULL,"
        " lease_expires_at = NULL WHERE id = ?",
        [(error, delivery_id) for delivery_id, error in unsendable],
    )
    return claims


_RECORD = f"""
WITH r(id, state, error, next, match_key, refund, sent_at) AS (VALUES {{values}})
UPDATE deliveries SET
    state = r.state,
    last_error = r.error,
    updated_at = :now,
    next_attempt_at = COALESCE(r.next, deliveries.next_attempt_at),
    match_key = COALESCE(r.match_key, deliveries.match_key),
    attempts = deliveries.attempts - r.refund,
    lease_owner = NULL,
    lease_expires_at = NULL,
    -- When the call was sent, not now: a webhook may be stored before this
    -- commits, and is matched by arriving after accepted_at (see the README).
    accepted_at = CASE WHEN r.state IN {DELIVERED_SQL}
        THEN COALESCE(deliveries.accepted_at, r.sent_at, :now) ELSE deliveries.accepted_at END,
    confirmed_at = CASE WHEN r.state = 'confirmed' THEN :now ELSE deliveries.confirmed_at END
FROM r
WHERE deliveries.id = r.id AND deliveries.state = 'in_flight' AND deliveries.lease_owner = :owner
RETURNING deliveries.id, deliveries.external_id, deliveries.backend
"""
_RECORD_CHUNK = 2000  # rows per statement: 7 parameters each, far below SQLite's limit


def record(
    conn: sqlite3.Connection,
    owner: str,
    results: list[DeliveryResult],
    sealer: Sealer = PLAINTEXT,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """One UPDATE for a whole batch of outcomes (see sqlite_accept on why
    statements, not rows, are what count); a lease that expired and passed to
    another worker is left alone."""
    now = clock.now()
    backend_ids = {r.delivery_id: r.backend_id for r in results if r.backend_id is not None}
    applied: list[tuple[int, str, str]] = []
    for start in range(0, len(results), _RECORD_CHUNK):
        chunk = results[start : start + _RECORD_CHUNK]
        params: dict[str, Any] = {"now": now, "owner": owner}
        values = []
        for n, r in enumerate(chunk):
            names = [f"{key}{n}" for key in ("i", "s", "e", "x", "m", "f", "t")]
            values.append("(" + ", ".join(f":{name}" for name in names) + ")")
            row = (
                r.delivery_id,
                r.state,
                seal_error(sealer, r.delivery_id, r.error),
                r.next_attempt_at,
                sealer.tag(r.match_key),  # an email: stored as its blind index
                int(r.refund_attempt),
                r.sent_at,
            )
            params.update(zip(names, row, strict=True))
        applied += conn.execute(_RECORD.format(values=", ".join(values)), params).fetchall()
    ids = [
        (external_id, backend, backend_ids[delivery_id], now)
        for delivery_id, external_id, backend in applied
        if delivery_id in backend_ids
    ]
    insert_rows(
        conn,
        "INSERT INTO backend_ids (external_id, backend, backend_id, updated_at)",
        ids,
        tail=" ON CONFLICT (external_id, backend) DO UPDATE"
        " SET backend_id = excluded.backend_id, updated_at = excluded.updated_at",
    )
    return len(applied)


def _filters(
    states: list[DeliveryState], delivery_id: int | None, backend: Backend | None
) -> tuple[str, list[Any]]:
    where = [state_is("d.state", states)]
    params: list[Any] = []
    if delivery_id is not None:
        where.append("d.id = ?")
        params.append(delivery_id)
    if backend is not None:
        where.append("d.backend = ?")
        params.append(backend)
    return " AND ".join(where), params


def replay(
    conn: sqlite3.Connection,
    states: list[DeliveryState],
    delivery_id: int | None,
    backend: Backend | None,
    clock: Clock = SYSTEM_CLOCK,
) -> ReplayResult:
    where, params = _filters(states, delivery_id, backend)
    # A delivery whose payload was purged or erased has nothing left to send.
    rows = conn.execute(
        "SELECT d.id, EXISTS (SELECT 1 FROM deliveries n WHERE n.backend = d.backend"
        "   AND n.external_id = d.external_id AND n.id > d.id"
        f"   AND n.state IN {DELIVERED_SQL})"
        f" FROM deliveries d WHERE {where} AND EXISTS (SELECT 1 FROM profile_writes w"
        "   WHERE w.id = d.write_id AND w.removed IS NULL)",
        params,
    ).fetchall()
    now = clock.now()
    requeued = [r[0] for r in rows if not r[1]]
    conn.executemany(
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
        " updated_at = ? WHERE id = ?",
        [(now, now, i) for i in requeued],
    )
    return ReplayResult(requeued=requeued, superseded=[r[0] for r in rows if r[1]])
