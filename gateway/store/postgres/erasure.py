"""Erasure on PostgreSQL: `DELETE /v1/profiles/{external_id}` at the store.

Runs in the caller's transaction. Removes the person's payloads, the Omneo
webhooks that named them (also those that matched none of their deliveries),
their lookup tags, backends' error texts and the Idempotency-Key records of
their requests; ids, states and times stay for audit.
"""

from __future__ import annotations

import time

import msgspec

from gateway.crypto import PLAINTEXT, Sealer, SealError
from gateway.lifecycle import DUE_SQL, OPEN_SQL
from gateway.schema import NormalizedProfile
from gateway.store.base import Erasure
from gateway.store.pii import REMOVED, match_values, split_tags, stored_forms, write_aad
from gateway.store.postgres.db import Conn, advisory_key
from gateway.store.postgres.views import PERSON_WRITES

_decode_profile = msgspec.json.Decoder(NormalizedProfile).decode


_ERASE_DELIVERIES = f"""
WITH person AS (
    SELECT id, state, backend, match_key, accepted_at FROM deliveries
    WHERE external_id = $1 FOR UPDATE
), changed AS (
    UPDATE deliveries d SET
        state = CASE WHEN p.state IN {OPEN_SQL} THEN 'erased' ELSE p.state END,
        last_error = CASE WHEN p.state IN {OPEN_SQL} OR d.last_error IS NOT NULL
            THEN 'erased on request' END,
        lease_owner = NULL, lease_expires_at = NULL, match_key = NULL, updated_at = $2
    FROM person p WHERE d.id = p.id
)
SELECT
    count(*) FILTER (WHERE state IN {DUE_SQL}) AS cancelled,
    count(*) FILTER (WHERE state = 'in_flight') AS in_flight,
    coalesce(array_agg(DISTINCT match_key) FILTER (WHERE match_key IS NOT NULL), '{{}}')
        AS tags,
    coalesce(array_agg(DISTINCT backend) FILTER (WHERE accepted_at IS NOT NULL), '{{}}')
        AS delivered_to
FROM person
"""


async def erase(conn: Conn, external_id: str, sealer: Sealer = PLAINTEXT) -> Erasure | None:
    """Runs in the caller's transaction."""
    now = time.time()
    # Expand's lock: no replica makes deliveries for the person's queued
    # writes while this runs; a write committed after this erasure is a new one.
    await conn.execute("SELECT pg_advisory_xact_lock($1)", advisory_key("expand"))
    # Found through their deliveries and the requests not expanded yet (the
    # accept path keeps no index by person).
    write_ids = [r[0] for r in await conn.fetch(PERSON_WRITES, external_id)]
    if not write_ids:
        return None
    # Read before the bodies go: how Omneo's webhooks may name the person, so
    # that events which matched none of their deliveries are found too.
    named_by: set[str] = set()
    for r in await conn.fetch(
        "SELECT body, request_id, position FROM profile_writes"
        " WHERE id = ANY($1::bigint[]) AND length(body) > 0",
        write_ids,
    ):
        try:
            profile = _decode_profile(sealer.open(r[0], write_aad(r[1], r[2])))
        except (SealError, msgspec.DecodeError):
            continue  # its tags on deliveries and Omneo's id still find the events
        named_by |= match_values(profile)
    # The caller's Idempotency-Keys (often built from an email) and body hashes
    # of every request that wrote the person. A retry of such a request is then
    # taken as new: an erasure outranks deduplication.
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE request_id IN"
        " (SELECT request_id FROM profile_writes WHERE id = ANY($1::bigint[]))",
        write_ids,
    )
    writes = await conn.fetchval(
        "WITH w AS (UPDATE profile_writes SET body = $1, key_id = NULL, removed = 'erased',"
        " removed_at = $2 WHERE id = ANY($3::bigint[]) AND removed IS DISTINCT FROM 'erased'"
        " RETURNING 1) SELECT count(*) FROM w",
        REMOVED,
        now,
        write_ids,
    )
    person = await conn.fetchrow(_ERASE_DELIVERIES, external_id, now)
    assert person is not None  # an aggregate: always one row
    ids = {
        r["backend"]: r["backend_id"]
        for r in await conn.fetch(
            "SELECT backend, backend_id FROM backend_ids WHERE external_id = $1", external_id
        )
    }
    tags = stored_forms(sealer, named_by) | set(person["tags"])
    events = await _events_of(conn, tags, ids.get("omneo"))
    await conn.execute(
        "UPDATE webhook_events SET body = $1, key_id = NULL, match_key = NULL, removed_at = $2"
        " WHERE id = ANY($3::bigint[])",
        REMOVED,
        now,
        events,
    )
    return Erasure(
        external_id=external_id,
        writes_erased=int(writes),
        deliveries_cancelled=int(person["cancelled"]),
        deliveries_in_flight=int(person["in_flight"]),
        webhook_events_erased=len(events),
        delivered_to=sorted(person["delivered_to"]),
        backend_ids=ids,
    )


async def _events_of(conn: Conn, tags: set[str], omneo_id: str | None) -> list[int]:
    """Stored Omneo webhooks that named the person: by Omneo's id of them, or by
    any stored form of a key they may be named by (their deliveries' tags, and
    the email and identities of their writes)."""
    found: set[int] = set()
    if omneo_id is not None:
        rows = await conn.fetch(
            "SELECT id FROM webhook_events WHERE source = 'omneo' AND backend_id = $1"
            " AND removed_at IS NULL",
            omneo_id,
        )
        found.update(r["id"] for r in rows)
    if tags:
        for r in await conn.fetch(
            "SELECT id, match_key FROM webhook_events WHERE match_key IS NOT NULL"
        ):
            if tags.intersection(split_tags(r["match_key"])):
                found.add(r["id"])
    return sorted(found)
