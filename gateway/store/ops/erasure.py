"""Erasure: `DELETE /v1/profiles/{external_id}` at the store, in one transaction.

Removes the person's payloads, the Omneo webhooks that named them (also those
that matched none of their deliveries), their lookup tags, backends' error
texts and the Idempotency-Key records of their requests; ids, states and times
stay for audit. On SQLite, `secure_delete` and the store's checkpoint after it
keep the removed bytes out of the file and the WAL; on PostgreSQL the old row
versions are reclaimed by vacuum, and hold ciphertext only with a key set.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.crypto import Sealer, SealError
from gateway.schema import NormalizedProfile
from gateway.store.base import Erasure
from gateway.store.pii import REMOVED, match_values, split_tags, stored_forms, write_aad
from gateway.store.plans import Execute, Fetch, FetchRow, Lock, Plan, as_list, lock_key

_decode_profile = msgspec.json.Decoder(NormalizedProfile).decode
# Expand's lock (PostgreSQL): no replica makes deliveries for the person's
# queued writes while this runs; a write committed after it is a new one. On
# SQLite the one writer already keeps expand out of this transaction.
_EXPAND_LOCK = lock_key("expand")


def erase(external_id: str, sealer: Sealer, now: float) -> Plan[Erasure | None]:
    yield Lock("lock_expand", (_EXPAND_LOCK,))
    # Found through their deliveries and the requests not expanded yet (the
    # accept path keeps no index by person).
    write_ids = [r[0] for r in (yield Fetch("person_writes", (external_id,)))]
    if not write_ids:
        return None
    # Read before the bodies go: how Omneo's webhooks may name the person, so
    # that events which matched none of their deliveries are found too.
    named_by = _match_values(sealer, (yield Fetch("person_bodies", (write_ids,))))
    # The caller's Idempotency-Keys (often built from an email) and body hashes
    # of every request that wrote the person. A retry of such a request is then
    # taken as new: an erasure outranks deduplication.
    yield Execute("erase_idempotency_keys", (write_ids,))
    # Deliveries not made yet (expand makes an erased write's deliveries
    # already erased) count as cancelled, as the open ones made so far do.
    unmade = sum(
        len(as_list(targets))
        for targets, _, removed in (yield Fetch("unexpanded_targets", (external_id,)))
        if removed is None
    )
    writes = yield Execute("erase_writes", (REMOVED, now, write_ids))
    # Their deliveries as they were, then erased (locked first on PostgreSQL).
    yield Lock("lock_person_deliveries", (external_id,))
    counts = yield FetchRow("person_open_deliveries", (external_id,))
    tags = {r[0] for r in (yield Fetch("person_match_keys", (external_id,)))}
    delivered_to = [r[0] for r in (yield Fetch("person_delivered_to", (external_id,)))]
    # Open deliveries are never sent now: claims only take pending, retrying
    # or in-flight rows. An in-flight one's worker finds its lease gone and its
    # outcome is not recorded. Backends' error texts may quote the data: gone too.
    yield Execute("erase_deliveries", (now, external_id))
    # What each backend last accepted of them (keyed digests, no values, but
    # theirs): gone, so a later write of the same id is sent in full.
    yield Execute("erase_sent_fields", (external_id,))
    ids = {r[0]: r[1] for r in (yield Fetch("backend_ids_of", (external_id,)))}
    tags |= stored_forms(sealer, named_by)
    events = yield from _events_of(tags, ids.get("omneo"))
    yield Execute("erase_events", (REMOVED, now, events))
    return Erasure(
        external_id=external_id,
        writes_erased=int(writes),
        deliveries_cancelled=int(counts[0]) + unmade,
        deliveries_in_flight=int(counts[1]),
        webhook_events_erased=len(events),
        delivered_to=delivered_to,
        backend_ids=ids,
    )


def _events_of(tags: set[str], omneo_id: str | None) -> Plan[list[int]]:
    """Stored Omneo webhooks that named the person: by Omneo's id of them, or by
    any stored form of a key they may be named by (their deliveries' tags, and
    the email and identities of their writes)."""
    found: set[int] = set()
    if omneo_id is not None:
        found.update(r[0] for r in (yield Fetch("omneo_events_of", (omneo_id,))))
    if tags:
        for event_id, stored in (yield Fetch("tagged_events")):
            if tags.intersection(split_tags(stored)):
                found.add(event_id)
    return sorted(found)


def _match_values(sealer: Sealer, rows: list[Any]) -> set[str]:
    values: set[str] = set()
    for body, request_id, position in rows:
        try:
            profile = _decode_profile(sealer.open(body, write_aad(request_id, position)))
        except (SealError, msgspec.DecodeError):
            continue  # its tags on deliveries and Omneo's id still find the events
        values |= match_values(profile)
    return values
