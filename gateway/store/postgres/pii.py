"""Retention purge on PostgreSQL (erasure: erasure.py; key rotation: ops/keys.py).

Plain functions of a connection, as `sqlite_pii`; each runs in the caller's
transaction, one short transaction per step, so replicas go on writing. The
old row versions a purge or an erasure leaves are reclaimed by (auto)vacuum;
with a key configured they hold ciphertext only.
"""

from __future__ import annotations

import time

import msgspec

from gateway.lifecycle import OPEN_SQL
from gateway.schema import NormalizedProfile
from gateway.store.base import PurgeResult
from gateway.store.pii import (
    REMOVED,
)
from gateway.store.postgres.db import Conn

_decode_profile = msgspec.json.Decoder(NormalizedProfile).decode


# Candidates are locked, then their deliveries, and the conditions are checked
# in a later statement (a fresh snapshot): a replay that committed in between
# is seen, and its write keeps its payload.
_PURGE_CANDIDATES = """
SELECT id FROM profile_writes
WHERE id > $1 AND id <= $1 + $2 AND removed IS NULL AND received_at < $3
  -- Not expanded yet: not delivered yet either (expand makes no deliveries
  -- for a removed write, so it must not be removed first).
  AND request_id NOT IN (SELECT request_id FROM expand_queue)
FOR UPDATE SKIP LOCKED
"""
_PURGE_CONFIRMED = f"""
WITH purged AS (
    UPDATE profile_writes w SET body = $2, key_id = NULL, removed = 'purged', removed_at = $3
    WHERE w.id = ANY($1::bigint[]) AND w.removed IS NULL
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.write_id = w.id
                      AND (d.state IN {OPEN_SQL} OR d.updated_at >= $4))
    RETURNING w.id
), tags AS (
    -- Their lookup tags go too (a webhook this late confirms nothing useful),
    -- and backends' error texts, which may quote the profile.
    UPDATE deliveries d SET match_key = NULL,
        last_error = CASE WHEN d.last_error IS NULL THEN NULL ELSE 'removed by retention' END
    FROM purged p
    WHERE d.write_id = p.id AND (d.match_key IS NOT NULL OR d.last_error IS NOT NULL)
)
SELECT count(*) FROM purged
"""


async def purge_step(
    conn: Conn, cutoff: float, write_after: int | None, event_after: int | None, span: int
) -> tuple[PurgeResult, int | None, int | None]:
    """As `sqlite_pii.purge_step`; runs in the caller's transaction."""
    now = time.time()
    writes = events = 0
    if write_after is not None:
        rows = await conn.fetch(_PURGE_CANDIDATES, write_after, span, cutoff)
        ids = [r["id"] for r in rows]
        if ids:
            await conn.execute(
                "SELECT 1 FROM deliveries WHERE write_id = ANY($1::bigint[]) FOR UPDATE", ids
            )
            writes = int(await conn.fetchval(_PURGE_CONFIRMED, ids, REMOVED, now, cutoff))
        write_after = await _next(conn, "profile_writes", write_after + span, cutoff)
    if event_after is not None:
        events = int(
            await conn.fetchval(
                "WITH e AS (UPDATE webhook_events SET body = $1, key_id = NULL,"
                " match_key = NULL, removed_at = $2 WHERE id > $3 AND id <= $3 + $4"
                " AND removed_at IS NULL AND state != 'received' AND received_at < $5"
                " RETURNING 1) SELECT count(*) FROM e",
                REMOVED,
                now,
                event_after,
                span,
                cutoff,
            )
        )
        event_after = await _next(conn, "webhook_events", event_after + span, cutoff)
    return PurgeResult(writes=writes, webhook_events=events), write_after, event_after


async def purge_keys_step(conn: Conn, cutoff: float, span: int) -> int:
    """Up to `span` Idempotency-Key records older than the cutoff (the caller's
    key may hold an email): a retry that late is not a retry."""
    removed = await conn.fetchval(
        "WITH k AS (DELETE FROM idempotency_keys WHERE (app, key) IN"
        " (SELECT app, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)"
        " RETURNING 1) SELECT count(*) FROM k",
        cutoff,
        span,
    )
    return int(removed)


async def _next(conn: Conn, table: str, after: int, cutoff: float) -> int | None:
    # Ids grow with arrival time, so the first row past the cutoff ends the walk.
    received = await conn.fetchval(
        f"SELECT received_at FROM {table} WHERE id > $1 ORDER BY id LIMIT 1", after
    )
    return after if received is not None and received < cutoff else None
