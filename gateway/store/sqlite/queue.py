"""The delivery queue's writes on SQLite: claim with leases, record outcomes,
replay. The queries are in queries/queue.sql.

Plain functions of a connection, run by `SQLiteStore` on its writer thread, so
each runs inside one transaction. Few statements per call, whatever the batch
size: each statement step hands the GIL back and forth with the event loop
(see accept.py), so a batch travels as one JSON argument, not a statement a row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.crypto import PLAINTEXT, Sealer
from gateway.lifecycle import DELIVERED
from gateway.schema import LANES, Backend, Lane
from gateway.store import queries
from gateway.store.base import Claim, DeliveryResult, DeliveryState, ReplayResult, lane_order
from gateway.store.expand import expand
from gateway.store.pii import open_claims, seal_error
from gateway.store.sqlite import plans


def _q(name: str) -> str:
    return queries.get("sqlite", name)


def claim(
    conn: sqlite3.Connection,
    backend: Backend,
    limit: int,
    owner: str,
    lease_seconds: float,
    sealer: Sealer = PLAINTEXT,
    clock: Clock = SYSTEM_CLOCK,
    lanes: Sequence[Lane] = LANES,
    settle: float = 0.0,
) -> list[Claim]:
    now = clock.now()
    # Accepted requests get their deliveries first (gateway/store/expand.py).
    plans.run(conn, expand(now))
    # Expired leases first, whatever their lane: those writes are the oldest.
    rows = conn.execute(_q("claim_expired"), (backend, now, limit)).fetchall()
    # Then lane by lane, the next filling what the one before left room for.
    for lane in lane_order(lanes):
        if len(rows) >= limit:
            break
        rows += conn.execute(
            _q("claim_due"), (backend, now, limit - len(rows), lane, now - settle)
        ).fetchall()
    if not rows:
        return []
    ids = json.dumps([r[0] for r in rows])
    conn.execute(_q("claim_lease"), (owner, now + lease_seconds, now, ids))
    # Merging (gateway/store/merge.py): the person's later queued writes ride along.
    merged_now = {r[0] for r in conn.execute(_q("claim_merge"), (ids, now)).fetchall()}
    carried = conn.execute(_q("claim_carried"), (ids,)).fetchall()
    claims, unsendable = open_claims(rows, sealer, carried, merged_now)
    conn.executemany(
        _q("claim_unsendable"), [(error, delivery_id) for delivery_id, error in unsendable]
    )
    return claims


def record(
    conn: sqlite3.Connection,
    owner: str,
    results: list[DeliveryResult],
    sealer: Sealer = PLAINTEXT,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """One UPDATE for a whole batch of outcomes; a lease that expired and
    passed to another worker is left alone."""
    now = clock.now()
    batch = json.dumps(
        [
            (
                r.delivery_id,
                r.state,
                seal_error(sealer, r.delivery_id, r.error),
                r.next_attempt_at,
                sealer.tag(r.match_key),  # an email: stored as its blind index
                int(r.refund_attempt),
                r.sent_at,
            )
            for r in results
        ]
    )
    applied = conn.execute(_q("record"), (now, owner, batch)).fetchall()
    backend_ids = {r.delivery_id: r.backend_id for r in results if r.backend_id is not None}
    ids = [
        (external_id, backend, backend_ids[delivery_id])
        for delivery_id, external_id, backend in sorted(applied)
        if delivery_id in backend_ids
    ]
    if ids:
        conn.execute(_q("record_backend_ids"), (json.dumps(ids), now))
    # What the backend now has, per field: only accepted or confirmed results
    # carry digests, and only those still leased to us count (same transaction).
    digests = {r.delivery_id: r.digests for r in results if r.digests and r.state in DELIVERED}
    sent = [
        (external_id, backend, json.dumps(digests[delivery_id], sort_keys=True))
        for delivery_id, external_id, backend in sorted(applied)
        if delivery_id in digests
    ]
    if sent:
        conn.execute(_q("record_sent_fields"), (json.dumps(sent), now))
    return len(applied)


def replay(
    conn: sqlite3.Connection,
    states: list[DeliveryState],
    delivery_id: int | None,
    backend: Backend | None,
    clock: Clock = SYSTEM_CLOCK,
) -> ReplayResult:
    query = queries.text("sqlite", "replay_candidates", states)
    rows = conn.execute(query, (delivery_id, backend)).fetchall()
    requeued = [r[0] for r in rows if not r[1]]
    if requeued:
        conn.execute(_q("replay_requeue"), (clock.now(), json.dumps(requeued)))
        conn.execute(_q("replay_forget_sent"), (json.dumps(requeued),))
    return ReplayResult(requeued=requeued, superseded=[r[0] for r in rows if r[1]])
