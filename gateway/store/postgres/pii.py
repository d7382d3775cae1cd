"""Personal data at rest on PostgreSQL: retention purge, key rotation (erasure: postgres_erasure).

Plain functions of a connection, as `sqlite_pii`; each runs in the caller's
transaction, one short transaction per step, so replicas go on writing. The
old row versions a purge or an erasure leaves are reclaimed by (auto)vacuum;
with a key configured they hold ciphertext only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from gateway.crypto import Sealer
from gateway.lifecycle import AWAITING_SQL, OPEN_SQL
from gateway.schema import NormalizedProfile
from gateway.store.base import PurgeResult, SealedTable, SealStatus
from gateway.store.pii import (
    REMOVED,
    check_keyring,
    error_prefix,
    event_aad,
    plaintext_refused,
    reseal_error,
    retag_event,
    write_aad,
)
from gateway.store.postgres.db import Conn, advisory_key

_decode_profile = msgspec.json.Decoder(NormalizedProfile).decode


async def register_keys(conn: Conn, sealer: Sealer) -> None:
    """At open: refuse a keyring that cannot read the store; record the current key."""
    async with conn.transaction():
        # Replicas starting together: one registers, the others then see it.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", advisory_key("encryption_keys"))
        rows = await conn.fetch("SELECT key_id, fingerprint FROM encryption_keys")
        new = check_keyring(sealer, {r["key_id"]: r["fingerprint"] for r in rows})
        if sealer.enabled and not sealer.allow_plaintext:
            # key_id is NULL for plaintext and for removed rows; only the former have a body.
            found = [
                table
                for table in ("profile_writes", "webhook_events")
                if await conn.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM {table}"
                    " WHERE key_id IS NULL AND length(body) > 0)"
                )
            ]
            if found:
                raise plaintext_refused(found)
        await conn.executemany(
            "INSERT INTO encryption_keys (key_id, fingerprint, added_at) VALUES ($1, $2, $3)",
            [(key_id, fingerprint, time.time()) for key_id, fingerprint in new],
        )


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


async def seal_status(conn: Conn, sealer: Sealer) -> SealStatus:
    current = sealer.current_id or ""
    counts = [
        await conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE length(body) > 0 AND key_id IS DISTINCT FROM $1",
            current,
        )
        for table in ("profile_writes", "webhook_events")
    ]
    retag = await conn.fetchval(
        f"SELECT count(*) FROM deliveries WHERE state IN {AWAITING_SQL}"
        " AND match_key IS NOT NULL AND NOT starts_with(match_key, $1)",
        sealer.current_tag_prefix() or "",
    )
    errors = await conn.fetchval(
        f"SELECT count(*) FROM deliveries WHERE {_ERROR_TO_RESEAL}",
        error_prefix(sealer.current_id),
    )
    return SealStatus(
        profile_writes=int(counts[0]),
        webhook_events=int(counts[1]),
        deliveries_to_retag=int(retag),
        delivery_errors=int(errors),
    )


# A backend's error text not sealed under the current key: under an older key,
# or in clear from before (the gateway's own texts get sealed along, harmlessly).
_ERROR_TO_RESEAL = "last_error IS NOT NULL AND NOT starts_with(last_error, $1)"


_RESEAL_SELECT = {
    "profile_writes": "SELECT id, body, request_id, position FROM profile_writes",
    "webhook_events": "SELECT id, body, source, event, body_hash, match_key FROM webhook_events",
}


async def reseal_step(
    conn: Conn, sealer: Sealer, table: SealedTable, after: int, span: int
) -> tuple[int, int | None]:
    """Runs in the caller's transaction; the rows are locked while resealed."""
    if table == "deliveries":
        return await _reseal_errors(conn, sealer, after, span)
    rows = await conn.fetch(
        f"{_RESEAL_SELECT[table]} WHERE id > $1 AND id <= $1 + $2 AND length(body) > 0"
        " AND key_id IS DISTINCT FROM $3 FOR UPDATE",
        after,
        span,
        sealer.current_id,
    )
    if table == "profile_writes":
        await conn.executemany(
            "UPDATE profile_writes SET body = $1, key_id = $2 WHERE id = $3",
            [(*_reseal(sealer, r[1], write_aad(r[2], r[3])), r[0]) for r in rows],
        )
    else:
        await conn.executemany(
            "UPDATE webhook_events SET body = $1, key_id = $2, match_key = $3 WHERE id = $4",
            [
                (
                    *_reseal(sealer, r[1], event_aad(r[2], r[3], r[4])),
                    retag_event(sealer, r[5]),
                    r[0],
                )
                for r in rows
            ],
        )
    more = await conn.fetchval(f"SELECT 1 FROM {table} WHERE id > $1 LIMIT 1", after + span)
    return len(rows), (after + span if more else None)


async def _reseal_errors(
    conn: Conn, sealer: Sealer, after: int, span: int
) -> tuple[int, int | None]:
    rows = await conn.fetch(
        "SELECT id, last_error FROM deliveries WHERE id > $2 AND id <= $2 + $3"
        f" AND {_ERROR_TO_RESEAL} FOR UPDATE",
        error_prefix(sealer.current_id),
        after,
        span,
    )
    await conn.executemany(
        "UPDATE deliveries SET last_error = $1 WHERE id = $2",
        [(reseal_error(sealer, r["id"], r["last_error"]), r["id"]) for r in rows],
    )
    more = await conn.fetchval("SELECT 1 FROM deliveries WHERE id > $1 LIMIT 1", after + span)
    return len(rows), (after + span if more else None)


def _reseal(sealer: Sealer, stored: bytes, aad: bytes) -> tuple[bytes, str | None]:
    return sealer.seal(sealer.open(stored, aad), aad)


async def retag_step(
    conn: Conn,
    sealer: Sealer,
    match_key_of: Callable[[NormalizedProfile], str | None],
    after: int,
    span: int,
) -> tuple[int, int | None]:
    """Runs in the caller's transaction."""
    rows = await conn.fetch(
        "SELECT d.id, w.body, w.request_id, w.position FROM deliveries d"
        " JOIN profile_writes w ON w.id = d.write_id"
        f" WHERE d.id > $1 AND d.id <= $1 + $2 AND d.state IN {AWAITING_SQL}"
        " AND d.match_key IS NOT NULL AND NOT starts_with(d.match_key, $3)"
        " AND length(w.body) > 0 FOR UPDATE OF d",
        after,
        span,
        sealer.current_tag_prefix() or "",
    )
    updates = [
        (
            sealer.tag(
                match_key_of(
                    _decode_profile(
                        sealer.open(r["body"], write_aad(r["request_id"], r["position"]))
                    )
                )
            ),
            r["id"],
        )
        for r in rows
    ]
    await conn.executemany("UPDATE deliveries SET match_key = $1 WHERE id = $2", updates)
    more = await conn.fetchval("SELECT 1 FROM deliveries WHERE id > $1 LIMIT 1", after + span)
    return len(updates), (after + span if more else None)


async def retire_keys(conn: Conn, sealer: Sealer) -> list[str]:
    """Runs in the caller's transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", advisory_key("encryption_keys"))
    retired = []
    for r in await conn.fetch("SELECT key_id FROM encryption_keys"):
        key_id = r["key_id"]
        if key_id == sealer.current_id:
            continue
        in_use = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM profile_writes WHERE key_id = $1)"
            " OR EXISTS (SELECT 1 FROM webhook_events WHERE key_id = $1)"
            " OR EXISTS (SELECT 1 FROM deliveries WHERE starts_with(last_error, $2))",
            key_id,
            error_prefix(key_id),
        )
        if not in_use:
            await conn.execute("DELETE FROM encryption_keys WHERE key_id = $1", key_id)
            retired.append(key_id)
    return retired
