"""Change detection: what a write would send that the backend does not have.

Per (person, backend) the store keeps a keyed digest of each field the backend
last accepted (`sent_fields`, written with an `accepted` or `confirmed`
outcome only). Before a send the dispatcher compares the mapped payload's
digests (`ChangeAware.fields`) with those: a write that changes nothing ends
`unchanged` with no call; otherwise the adapter gets `Item.changed` and sends
what its backend takes (Ocamba: only the changed custom properties; import_batch
and Omneo: the whole mapped profile). A request's `resend` or the mapping's
`resend` for the backend sends everything, as if nothing were known.

A digest is the HMAC under the blind-index key (`Sealer.tag`, the key lookup
values are stored under) of a SHA-256 of the canonical JSON of (backend,
field, value): the table reveals no value and cannot be matched against
another backend's. Without encryption keys it is the bare SHA-256. After a key
rotation every digest differs from the stored ones: each person is sent once
more in full, then compared under the new key.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from gateway.backends.base import BackendAdapter, ChangeAware, Item, Outcome
from gateway.crypto import Sealer
from gateway.schema import Backend
from gateway.store.base import Claim, Store, StoreError

log = logging.getLogger("gateway.dispatch")

UNCHANGED = "the backend already has every field of this write; not sent"


def digest(sealer: Sealer, backend: Backend, field: str, value: Any) -> str:
    canonical = msgspec.json.encode([backend, field, value], order="sorted")
    plain = "sha256:" + hashlib.sha256(canonical).hexdigest()
    return sealer.tag(plain) or plain


def digests(sealer: Sealer, backend: Backend, fields: Mapping[str, Any]) -> dict[str, str]:
    return {name: digest(sealer, backend, name, value) for name, value in fields.items()}


def changed(current: Mapping[str, str], stored: Mapping[str, str]) -> frozenset[str]:
    """The fields whose digest differs from (or is missing in) what is stored.
    A field the write does not carry is not a change: writes are partial."""
    return frozenset(name for name, d in current.items() if stored.get(name) != d)


async def sort_items(
    store: Store,
    sealer: Sealer,
    backend: Backend,
    adapter: BackendAdapter,
    claims: Sequence[Claim],
    items: list[Item],
) -> tuple[list[Item], list[Outcome], dict[int, dict[str, str]]]:
    """The items to send, each with what changed; `unchanged` outcomes for those that change
    nothing; and per delivery the digests to remember once accepted."""
    if not isinstance(adapter, ChangeAware):
        return items, [], {}
    try:
        stored = await store.sent_fields(backend, [c.external_id for c in claims])
    except StoreError:
        # Unknown what the backend has: send everything (at worst a re-send).
        log.exception("reading sent fields failed", extra={"backend": backend})
        stored = {}
    resend = {c.delivery_id for c in claims if c.resend or adapter.resend}
    send: list[Item] = []
    skipped: list[Outcome] = []
    remember: dict[int, dict[str, str]] = {}
    for item in items:
        try:
            fields = adapter.fields(item)
        except Exception:  # the mapping cannot apply: the adapter fails it
            send.append(item)
            continue
        current = digests(sealer, backend, fields)
        remember[item.delivery_id] = current
        if item.delivery_id in resend:
            send.append(item)
            continue
        had = stored.get(item.profile.external_id)
        if had is None:
            # The backend never accepted this person through the gateway:
            # nothing to compare with, so the adapter gets all of it.
            send.append(item)
            continue
        differ = changed(current, had)
        if differ:
            send.append(msgspec.structs.replace(item, changed=differ))
        else:
            skipped.append(Outcome(item.delivery_id, "unchanged", UNCHANGED))
    return send, skipped, remember
