"""Erasure on SQLite: `DELETE /v1/profiles/{external_id}` at the store.

Run by `SQLiteStore` on its writer thread, in one transaction. Removes the
person's payloads, the Omneo webhooks that named them (also those that matched
none of their deliveries), their lookup tags, backends' error texts and the
Idempotency-Key records of their requests; ids, states and times stay for
audit. `secure_delete` and the store's checkpoint after it keep the removed
bytes out of the file and the WAL.
"""

from __future__ import annotations

import json
import sqlite3
import time

import msgspec

from gateway.crypto import PLAINTEXT, Sealer, SealError
from gateway.lifecycle import OPEN_SQL
from gateway.schema import NormalizedProfile
from gateway.store.base import Erasure
from gateway.store.pii import REMOVED, match_values, split_tags, stored_forms, write_aad
from gateway.store.sqlite.views import PERSON_WRITES

_decode_profile = msgspec.json.Decoder(NormalizedProfile).decode


def erase(conn: sqlite3.Connection, external_id: str, sealer: Sealer = PLAINTEXT) -> Erasure | None:
    now = time.time()
    # Found through their deliveries and the requests not expanded yet (the
    # accept path keeps no index by person); the same transaction as the rest,
    # so no expand runs in between.
    write_ids = [w for (w,) in conn.execute(PERSON_WRITES, (external_id,))]
    if not write_ids:
        return None
    writes_of = json.dumps(write_ids)
    # Read before the bodies go: how Omneo's webhooks may name the person, so
    # that events which matched none of their deliveries are found too.
    named_by = _match_values(
        sealer,
        conn.execute(
            "SELECT body, request_id, position FROM profile_writes"
            " WHERE id IN (SELECT value FROM json_each(?)) AND length(body) > 0",
            (writes_of,),
        ).fetchall(),
    )
    # The caller's Idempotency-Keys (often built from an email) and body hashes
    # of every request that wrote the person. A retry of such a request is then
    # taken as new: an erasure outranks deduplication.
    conn.execute(
        "DELETE FROM idempotency_keys WHERE request_id IN (SELECT request_id"
        " FROM profile_writes WHERE id IN (SELECT value FROM json_each(?)))",
        (writes_of,),
    )
    writes = conn.execute(
        "UPDATE profile_writes SET body = ?, key_id = NULL, removed = 'erased', removed_at = ?"
        " WHERE id IN (SELECT value FROM json_each(?))"
        " AND (removed IS NULL OR removed != 'erased')",
        (REMOVED, now, writes_of),
    ).rowcount
    in_flight, cancelled = conn.execute(
        "SELECT COUNT(*) FILTER (WHERE state = 'in_flight'), COUNT(*) FROM deliveries"
        f" WHERE external_id = ? AND state IN {OPEN_SQL}",
        (external_id,),
    ).fetchone()
    tags = stored_forms(sealer, named_by) | {
        tag
        for (tag,) in conn.execute(
            "SELECT DISTINCT match_key FROM deliveries"
            " WHERE external_id = ? AND match_key IS NOT NULL",
            (external_id,),
        )
    }
    delivered_to = [
        b
        for (b,) in conn.execute(
            "SELECT DISTINCT backend FROM deliveries WHERE external_id = ?"
            " AND accepted_at IS NOT NULL ORDER BY backend",
            (external_id,),
        )
    ]
    # Open deliveries are never sent now: claims only take pending, retrying
    # or in-flight rows. An in-flight one's worker finds its lease gone and its
    # outcome is not recorded. Backends' error texts may quote the data: gone too.
    conn.execute(
        "UPDATE deliveries SET"
        f" state = CASE WHEN state IN {OPEN_SQL} THEN 'erased' ELSE state END,"
        f" last_error = CASE WHEN state IN {OPEN_SQL} OR last_error IS NOT NULL"
        "   THEN 'erased on request' END,"
        " lease_owner = NULL, lease_expires_at = NULL, match_key = NULL, updated_at = ?"
        " WHERE external_id = ?",
        (now, external_id),
    )
    ids = dict(
        conn.execute(
            "SELECT backend, backend_id FROM backend_ids WHERE external_id = ?", (external_id,)
        ).fetchall()
    )
    events = _events_of(conn, tags, ids.get("omneo"))
    conn.executemany(
        "UPDATE webhook_events SET body = ?, key_id = NULL, match_key = NULL, removed_at = ?"
        " WHERE id = ?",
        [(REMOVED, now, event_id) for event_id in events],
    )
    return Erasure(
        external_id=external_id,
        writes_erased=writes,
        deliveries_cancelled=cancelled - in_flight,
        deliveries_in_flight=in_flight,
        webhook_events_erased=len(events),
        delivered_to=delivered_to,
        backend_ids=ids,
    )


def _events_of(conn: sqlite3.Connection, tags: set[str], omneo_id: str | None) -> list[int]:
    """Stored Omneo webhooks that named the person: by Omneo's id of them, or by
    any stored form of a key they may be named by (their deliveries' tags, and
    the email and identities of their writes)."""
    found: set[int] = set()
    if omneo_id is not None:
        found.update(
            i
            for (i,) in conn.execute(
                "SELECT id FROM webhook_events WHERE source = 'omneo' AND backend_id = ?"
                " AND removed_at IS NULL",
                (omneo_id,),
            )
        )
    if tags:
        for event_id, stored in conn.execute(
            "SELECT id, match_key FROM webhook_events WHERE match_key IS NOT NULL"
        ):
            if tags.intersection(split_tags(stored)):
                found.add(event_id)
    return sorted(found)


def _match_values(sealer: Sealer, rows: list[tuple[bytes, str, int]]) -> set[str]:
    values: set[str] = set()
    for body, request_id, position in rows:
        try:
            profile = _decode_profile(sealer.open(body, write_aad(request_id, position)))
        except (SealError, msgspec.DecodeError):
            continue  # its tags on deliveries and Omneo's id still find the events
        values |= match_values(profile)
    return values
