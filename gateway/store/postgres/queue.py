"""The delivery queue's writes on PostgreSQL: claim with leases, record, replay (queries/queue.sql).

Plain functions of a connection, like sqlite/queue.py; `PostgresStore` runs each
on a pooled connection. Several replicas claim from the same table at once.

Why a claim never hands one delivery to two workers, and never lets a person's
later write overtake an earlier one, under READ COMMITTED:

1. Candidates are locked with FOR UPDATE SKIP LOCKED. A row another claim has
   locked (not yet committed) is skipped, never waited for. A row that another
   claim locked, updated and committed after our statement's snapshot was taken
   is locked in its newest version, and PostgreSQL re-checks the candidate's
   own conditions on that version: it is now `in_flight` with a lease running,
   so neither the due branch (pending/retrying) nor the expired branch (lease
   over) still matches, and it is dropped. A held lease is therefore never
   claimed twice; an expired one is claimable by exactly one claimer.
2. The ordering rule is NOT EXISTS (an earlier open delivery of the same person
   and backend), read from the statement's snapshot. Where that snapshot is out
   of date it errs on the safe side: an earlier delivery claimed or finished
   since then still looks pending or in flight to us, so the later one just
   waits for the next claim. Two claims running together: the one that locked
   the earlier delivery takes it; the other skips it but still sees it open
   and holds the later one back.
3. What a snapshot cannot see at all is a delivery not yet committed. Delivery
   ids are taken by expand, one replica at a time, and committed before the
   claim that follows it starts, so a snapshot that sees a delivery of a person
   sees all of that person's earlier ones (see gateway/store/expand.py).
4. A delivery put back by replay() may be older than one already in flight;
   the rule holds back newer writes, not ones already sent (as on SQLite).
5. Lanes only choose which due deliveries are candidates first; the rule in 2
   looks at every open delivery of the person, whatever its lane, so a
   real-time write never overtakes an earlier bulk one of the same person.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.crypto import PLAINTEXT, Sealer
from gateway.lifecycle import DELIVERED
from gateway.schema import LANES, Backend, Lane
from gateway.store import queries
from gateway.store.base import (
    Claim,
    DeliveryResult,
    DeliveryState,
    ReplayResult,
    lane_order,
)
from gateway.store.expand import expand
from gateway.store.pii import open_claims, seal_error
from gateway.store.postgres import plans
from gateway.store.postgres.db import Conn


def _q(name: str) -> str:
    return queries.get("postgres", name)


async def claim(
    conn: Conn,
    backend: Backend,
    limit: int,
    owner: str,
    lease_seconds: float,
    sealer: Sealer = PLAINTEXT,
    clock: Clock = SYSTEM_CLOCK,
    lanes: Sequence[Lane] = LANES,
    settle: float = 0.0,
) -> list[Claim]:
    order = lane_order(lanes)
    first, then = order[0], (order[1] if len(order) > 1 else None)
    # Accepted requests get their deliveries first, in a transaction of their
    # own (its advisory lock is held only that long); the claim then sees them.
    async with conn.transaction():
        await plans.run(conn, expand(clock.now()))
    async with conn.transaction():
        now = clock.now()
        rows = await conn.fetch(
            _q("claim"), backend, now, limit, owner, lease_seconds, first, then, now - settle
        )
        carried = []
        if rows:
            # Merging (gateway/store/merge.py): the person's later queued
            # writes ride along, merged in the transaction that leases them.
            carried = await conn.fetch(_q("claim_merge"), [r[0] for r in rows], clock.now())
    merged_now = {r[1] for r in carried if r[5]}
    claims, unsendable = open_claims(list(rows), sealer, list(carried), merged_now)
    if unsendable:
        # Rare, so a statement of its own; still leased to us, so ours to settle.
        await conn.execute(
            _q("claim_unsendable"),
            [delivery_id for delivery_id, _ in unsendable],
            [error for _, error in unsendable],
            owner,
        )
    return claims


async def record(
    conn: Conn,
    owner: str,
    results: list[DeliveryResult],
    sealer: Sealer = PLAINTEXT,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    if not results:
        return 0
    applied = await conn.fetchval(
        _q("record"),
        clock.now(),
        owner,
        [r.delivery_id for r in results],
        [r.state for r in results],
        [seal_error(sealer, r.delivery_id, r.error) for r in results],
        [r.next_attempt_at for r in results],
        [sealer.tag(r.match_key) for r in results],  # emails: stored as blind indexes
        [int(r.refund_attempt) for r in results],
        [r.backend_id for r in results],
        [r.sent_at for r in results],
        [_digests(r) for r in results],
    )
    return int(applied)


def _digests(result: DeliveryResult) -> str | None:
    """What the backend now has (gateway/store/ops/sent_fields.py), as JSON text."""
    if not result.digests or result.state not in DELIVERED:
        return None
    return json.dumps(result.digests, sort_keys=True)


async def replay(
    conn: Conn,
    states: list[DeliveryState],
    delivery_id: int | None,
    backend: Backend | None,
    clock: Clock = SYSTEM_CLOCK,
) -> ReplayResult:
    query = queries.text("postgres", "replay", states)
    rows = await conn.fetch(query, clock.now(), delivery_id, backend)
    return ReplayResult(
        requeued=[r["id"] for r in rows if not r["superseded"]],
        superseded=[r["id"] for r in rows if r["superseded"]],
    )
