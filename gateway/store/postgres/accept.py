"""Storing an accepted request on PostgreSQL: one transaction per request.

Replicas share the database, so the same Idempotency-Key twice at once is
settled by the database's own locks: the key is inserted first, with ON
CONFLICT DO NOTHING. The second transaction's insert waits on the first's
uncommitted primary-key entry; if the first commits, the second finds the key
taken and answers a replay (same body) or a conflict (another body), having
written nothing; if the first rolls back, the second stores its request.

The order of one person's writes is not settled here any more: accept only
queues the request, and expand (gateway/store/expand.py), one replica at a
time, gives the deliveries their ids in queue order.
"""

from __future__ import annotations

import msgspec

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.crypto import PLAINTEXT, Sealer
from gateway.store.base import AcceptResult, IdempotencyConflict, NewRequest, StoreError
from gateway.store.pii import write_aad
from gateway.store.postgres.db import CHANNEL, Conn

_encode = msgspec.json.Encoder().encode

_CLAIM_KEY = """
INSERT INTO idempotency_keys (app, key, body_hash, request_id, created_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (app, key) DO NOTHING
RETURNING true
"""
_EARLIER = """
SELECT k.body_hash, k.request_id, r.profile_count, r.targets
FROM idempotency_keys k JOIN requests r ON r.id = k.request_id
WHERE k.app = $1 AND k.key = $2
"""
# One statement for the rest: the foreign keys are checked at its end, so the
# order in which its parts run does not matter; the notifications are sent
# only if and when the transaction commits.
_STORE = """
WITH request AS (
    INSERT INTO requests (id, app, received_at, targets, profile_count, lane, resend, traceparent)
    VALUES ($1, $2, $3, $4::text[], cardinality($5::text[]), $9, $10, $11)
), writes AS (
    INSERT INTO profile_writes (request_id, position, external_id, body, key_id, received_at)
    SELECT $1, (p.n - 1)::integer, p.external_id, p.body, $8, $3
    FROM unnest($5::text[], $6::bytea[]) WITH ORDINALITY AS p(external_id, body, n)
    ORDER BY p.n
), queued AS (
    INSERT INTO expand_queue (request_id) VALUES ($1)
)
SELECT pg_notify($7, t.backend) FROM unnest($4::text[]) AS t(backend)
"""


async def accept(
    conn: Conn, req: NewRequest, sealer: Sealer = PLAINTEXT, clock: Clock = SYSTEM_CLOCK
) -> AcceptResult:
    """Store `req` with its writes (expand makes the deliveries), or answer from an earlier
    request with the same Idempotency-Key. Raises IdempotencyConflict."""
    now = clock.now()
    async with conn.transaction():
        if req.idempotency_key is not None:
            args = (req.app, req.idempotency_key, req.body_hash, req.request_id, now)
            if await conn.fetchval(_CLAIM_KEY, *args) is None:
                return await _answer_again(conn, req)
        ids = [p.external_id for p in req.profiles]
        sealed = [
            sealer.seal(_encode(p), write_aad(req.request_id, n))
            for n, p in enumerate(req.profiles)
        ]
        bodies = [body for body, _ in sealed]
        targets = list(req.targets)
        await conn.execute(
            _STORE,
            req.request_id,
            req.app,
            req.received_at,
            targets,
            ids,
            bodies,
            CHANNEL,
            sealer.current_id,
            req.lane,
            req.resend,
            req.traceparent,
        )
    return AcceptResult(req.request_id, len(req.profiles), targets)


async def _answer_again(conn: Conn, req: NewRequest) -> AcceptResult:
    # A new statement, so under READ COMMITTED it sees the request that took the
    # key, even one that committed while our insert waited for it.
    row = await conn.fetchrow(_EARLIER, req.app, req.idempotency_key)
    if row is None:  # keys are never deleted: the insert would have succeeded
        raise StoreError("the Idempotency-Key's request vanished while it was looked up")
    if row["body_hash"] != req.body_hash:
        raise IdempotencyConflict(row["request_id"])
    return AcceptResult(row["request_id"], row["profile_count"], row["targets"], replayed=True)
