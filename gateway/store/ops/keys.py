"""Key rotation and the keyring: register_keys at open, seal status, reseal,
retag, retire (see gateway/store/pii.py for what a sealed value is bound to).

Reseal and retag go a span of ids at a time, each step one short transaction,
so accepted writes never wait long behind a rotation. On PostgreSQL the rows a
step rewrites are locked by its select (FOR UPDATE in the engine's query), and
the keyring's changes are serialised across replicas by an advisory lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from gateway.crypto import Sealer
from gateway.schema import NormalizedProfile
from gateway.store.base import SealedTable, SealStatus
from gateway.store.pii import (
    check_keyring,
    error_prefix,
    event_aad,
    plaintext_refused,
    reseal_error,
    retag_event,
    write_aad,
)
from gateway.store.plans import Execute, ExecuteMany, Fetch, FetchValue, Lock, Plan, lock_key

_decode_profile = msgspec.json.Decoder(NormalizedProfile).decode
_KEYRING_LOCK = lock_key("encryption_keys")


def register_keys(sealer: Sealer) -> Plan[None]:
    """At open, in one transaction: refuse a keyring that cannot read the store;
    record the current key. Replicas starting together: one registers, the
    others then see it."""
    yield Lock("lock_keyring", (_KEYRING_LOCK,))
    rows = yield Fetch("encryption_keys")
    new = check_keyring(sealer, {r[0]: r[1] for r in rows})
    if sealer.enabled and not sealer.allow_plaintext:
        # key_id is NULL for plaintext and for removed rows; only the former have a body.
        found = []
        if (yield FetchValue("plaintext_writes_exist")):
            found.append("profile_writes")
        if (yield FetchValue("plaintext_events_exist")):
            found.append("webhook_events")
        if found:
            raise plaintext_refused(found)
    now = time.time()
    yield ExecuteMany("register_key", [(key_id, fp, now) for key_id, fp in new])


def seal_status(sealer: Sealer) -> Plan[SealStatus]:
    current = sealer.current_id or ""
    writes = yield FetchValue("count_writes_to_reseal", (current,))
    events = yield FetchValue("count_events_to_reseal", (current,))
    retag = yield FetchValue("count_deliveries_to_retag", (sealer.current_tag_prefix() or "",))
    # A backend's error text not sealed under the current key: under an older
    # key, or in clear from before (the gateway's own texts get sealed along).
    errors = yield FetchValue("count_errors_to_reseal", (error_prefix(sealer.current_id),))
    return SealStatus(
        profile_writes=int(writes),
        webhook_events=int(events),
        deliveries_to_retag=int(retag),
        delivery_errors=int(errors),
    )


def _reseal(sealer: Sealer, stored: bytes, aad: bytes) -> tuple[bytes, str | None]:
    return sealer.seal(sealer.open(stored, aad), aad)


def reseal_step(
    sealer: Sealer, table: SealedTable, after: int, span: int
) -> Plan[tuple[int, int | None]]:
    """One span of `table` under the current key; returns how many rows it
    resealed and where the next step starts (None: past the last row)."""
    if table == "profile_writes":
        rows = yield Fetch("writes_to_reseal", (after, span, sealer.current_id))
        yield ExecuteMany(
            "reseal_write",
            [(*_reseal(sealer, r[1], write_aad(r[2], r[3])), r[0]) for r in rows],
        )
        more = yield FetchValue("write_after", (after + span,))
    elif table == "webhook_events":
        rows = yield Fetch("events_to_reseal", (after, span, sealer.current_id))
        yield ExecuteMany(
            "reseal_event",
            [
                (
                    *_reseal(sealer, r[1], event_aad(r[2], r[3], r[4])),
                    retag_event(sealer, r[5]),
                    r[0],
                )
                for r in rows
            ],
        )
        more = yield FetchValue("event_after", (after + span,))
    else:
        rows = yield Fetch("errors_to_reseal", (after, span, error_prefix(sealer.current_id)))
        yield ExecuteMany("reseal_error", [(reseal_error(sealer, r[0], r[1]), r[0]) for r in rows])
        more = yield FetchValue("delivery_after", (after + span,))
    return len(rows), (after + span if more else None)


def retag_step(
    sealer: Sealer,
    match_key_of: Callable[[NormalizedProfile], str | None],
    after: int,
    span: int,
) -> Plan[tuple[int, int | None]]:
    """One span of deliveries awaiting a webhook, their match key tagged under
    the current key (read again from the write's payload)."""
    rows = yield Fetch("deliveries_to_retag", (after, span, sealer.current_tag_prefix() or ""))
    updates = [
        (sealer.tag(match_key_of(_decode_profile(sealer.open(r[1], write_aad(r[2], r[3]))))), r[0])
        for r in rows
    ]
    yield ExecuteMany("retag_delivery", updates)
    more = yield FetchValue("delivery_after", (after + span,))
    return len(updates), (after + span if more else None)


def retire_keys(sealer: Sealer) -> Plan[list[str]]:
    """In one transaction: forget every key but the current one that seals nothing."""
    yield Lock("lock_keyring", (_KEYRING_LOCK,))
    retired = []
    for key_id, _ in (yield Fetch("encryption_keys")):
        if key_id == sealer.current_id:
            continue
        if not (yield FetchValue("key_in_use", (key_id, error_prefix(key_id)))):
            yield Execute("retire_key", (key_id,))
            retired.append(key_id)
    return retired
