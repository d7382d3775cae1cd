"""The delivery queue on PostgreSQL: claim with leases, record outcomes, dead letters.

Plain functions of a connection, like `sqlite_queue`; `PostgresStore` runs each
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
"""

from __future__ import annotations

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
from gateway.store.postgres import plans
from gateway.store.postgres.db import Conn

# No earlier write of the same person to the same backend is still open.
# OFFSET 0 keeps this a sub-plan run once per candidate, an index probe on
# (backend, external_id, id) as on SQLite. Without it the planner may turn it
# into an anti join, and on a table whose statistics lag behind a burst of
# writes (estimated at one row) it picked an inner scan over the backend's
# whole open queue per candidate: 1.3 s for a claim of 500 out of 8,000.
_HEAD = f"""NOT EXISTS (
        SELECT 1 FROM deliveries e
        WHERE e.backend = c.backend AND e.external_id = c.external_id
          AND e.id < c.id AND e.state IN {OPEN_SQL}
        OFFSET 0)"""
# Each branch walks its partial index (deliveries_lease, deliveries_due_at) in
# order and stops at the limit, probing deliveries_open_person per candidate,
# so a claim costs about `limit` rows however long the queue is. Expired leases
# come first: those writes are the oldest. The branches are read lazily, so
# the second locks only as many rows as the first left room for.
_CLAIM = f"""
WITH expired AS (
    SELECT c.id, c.lease_expires_at AS due_at FROM deliveries c
    WHERE c.backend = $1 AND c.state = 'in_flight' AND c.lease_expires_at <= $2
      AND {_HEAD}
    ORDER BY c.lease_expires_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), due AS (
    SELECT c.id, c.next_attempt_at AS due_at FROM deliveries c
    WHERE c.backend = $1 AND c.state IN {DUE_SQL} AND c.next_attempt_at <= $2
      AND {_HEAD}
    ORDER BY c.next_attempt_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id, 0 AS branch, due_at FROM expired
    UNION ALL
    SELECT id, 1 AS branch, due_at FROM due
    LIMIT $3
), claimed AS (
    UPDATE deliveries d
    SET state = 'in_flight', lease_owner = $4, lease_expires_at = $2 + $5,
        attempts = d.attempts + 1, updated_at = $2
    FROM picked p
    WHERE d.id = p.id
    RETURNING d.id, d.external_id, d.backend, d.write_id, d.attempts, d.created_at,
              p.branch, p.due_at
)
SELECT c.id, c.external_id, c.attempts, c.created_at, w.body, b.backend_id,
       w.request_id, w.position
FROM claimed c
JOIN profile_writes w ON w.id = c.write_id
LEFT JOIN backend_ids b ON b.external_id = c.external_id AND b.backend = c.backend
ORDER BY c.branch, c.due_at, c.id
"""


async def claim(
    conn: Conn,
    backend: Backend,
    limit: int,
    owner: str,
    lease_seconds: float,
    sealer: Sealer = PLAINTEXT,
    clock: Clock = SYSTEM_CLOCK,
) -> list[Claim]:
    # Accepted requests get their deliveries first, in a transaction of their
    # own (its advisory lock is held only that long); the claim then sees them.
    async with conn.transaction():
        await plans.run(conn, expand(clock.now()))
    rows = await conn.fetch(_CLAIM, backend, clock.now(), limit, owner, lease_seconds)
    claims, unsendable = open_claims(list(rows), sealer)
    if unsendable:
        # Rare, so a statement of its own; still leased to us, so ours to settle.
        await conn.execute(
            "UPDATE deliveries d SET state = 'failed', last_error = u.error,"
            " lease_owner = NULL, lease_expires_at = NULL"
            " FROM unnest($1::bigint[], $2::text[]) AS u(id, error)"
            " WHERE d.id = u.id AND d.state = 'in_flight' AND d.lease_owner = $3",
            [delivery_id for delivery_id, _ in unsendable],
            [error for _, error in unsendable],
            owner,
        )
    return claims


# A whole batch in one statement: only rows still leased by `owner` change (a
# lease that expired and passed to another worker is left alone), and the ids
# the backend gave are upserted for exactly those rows. When one batch names a
# person twice, the newest delivery's id wins, as a later row would on SQLite.
_RECORD = f"""
WITH r AS (
    SELECT * FROM unnest($3::bigint[], $4::text[], $5::text[], $6::float8[], $7::text[],
                         $8::integer[], $9::text[], $10::float8[])
        AS r(id, state, error, next, match_key, refund, backend_id, sent_at)
), applied AS (
    UPDATE deliveries d SET
        state = r.state,
        last_error = r.error,
        updated_at = $1,
        next_attempt_at = COALESCE(r.next, d.next_attempt_at),
        match_key = COALESCE(r.match_key, d.match_key),
        attempts = d.attempts - r.refund,
        lease_owner = NULL,
        lease_expires_at = NULL,
        -- When the call was sent, not now: a webhook may be stored before this
        -- commits, and is matched by arriving after accepted_at (see the README).
        accepted_at = CASE WHEN r.state IN {DELIVERED_SQL}
            THEN COALESCE(d.accepted_at, r.sent_at, $1) ELSE d.accepted_at END,
        confirmed_at = CASE WHEN r.state = 'confirmed' THEN $1 ELSE d.confirmed_at END
    FROM r
    WHERE d.id = r.id AND d.state = 'in_flight' AND d.lease_owner = $2
    RETURNING d.id, d.external_id, d.backend, r.backend_id
), ids AS (
    INSERT INTO backend_ids (external_id, backend, backend_id, updated_at)
    SELECT DISTINCT ON (a.external_id, a.backend) a.external_id, a.backend, a.backend_id, $1
    FROM applied a WHERE a.backend_id IS NOT NULL
    ORDER BY a.external_id, a.backend, a.id DESC
    ON CONFLICT (external_id, backend) DO UPDATE
    SET backend_id = EXCLUDED.backend_id, updated_at = EXCLUDED.updated_at
)
SELECT count(*) FROM applied
"""


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
        _RECORD,
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
    )
    return int(applied)


# The matching rows are locked first, and a row changed meanwhile is re-checked
# against the states asked for: an `unconfirmed` delivery that a webhook just
# confirmed is no longer replayed.
_REPLAY = f"""
WITH target AS (
    SELECT d.id, EXISTS (
        SELECT 1 FROM deliveries n
        WHERE n.backend = d.backend AND n.external_id = d.external_id AND n.id > d.id
          AND n.state IN {DELIVERED_SQL}) AS superseded
    FROM deliveries d
    -- A delivery whose payload was purged or erased has nothing left to send.
    JOIN profile_writes w ON w.id = d.write_id AND w.removed IS NULL
    WHERE {{where}}
    FOR UPDATE OF d
), requeued AS (
    UPDATE deliveries d
    SET state = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $1
    FROM target t
    WHERE d.id = t.id AND NOT t.superseded
)
SELECT id, superseded FROM target ORDER BY id
"""


async def replay(
    conn: Conn,
    states: list[DeliveryState],
    delivery_id: int | None,
    backend: Backend | None,
    clock: Clock = SYSTEM_CLOCK,
) -> ReplayResult:
    where = " AND ".join(
        [
            state_is("d.state", states),
            "d.id = $2" if delivery_id is not None else "$2::bigint IS NULL",
            "d.backend = $3" if backend is not None else "$3::text IS NULL",
        ]
    )
    rows = await conn.fetch(_REPLAY.format(where=where), clock.now(), delivery_id, backend)
    return ReplayResult(
        requeued=[r["id"] for r in rows if not r["superseded"]],
        superseded=[r["id"] for r in rows if r["superseded"]],
    )
