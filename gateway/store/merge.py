"""One payload for a person's queued writes to a backend: later fields win.

A claim that finds later writes of the same person to the same backend still
queued sends them inside the claimed (earliest) delivery, the *carrier*, and
ends them `merged` (gateway/store/<engine>/queue.py). What the carrier sends is
what the backend would hold had it received every write in order, as the API's
writes mean it (README, "The API"): a write says only what it carries.

- A field a later write leaves out (absent or null) keeps the earlier value:
  no backend is sent a field the profile does not carry.
- A field a later write carries replaces the earlier value whole: scalars,
  and the lists (`tags`, `addresses`), which every backend is sent whole.
- `attributes` and `identities` merge key by key (each key is its own custom
  property, attribute or identity on every backend), and `consents` channel by
  channel (email, sms: each a subscription of its own).
- `phone` and `phone_country` travel together: `phone_country` is derived from
  the phone the write carried, never a field of its own.

Engine-free and pure, so both stores use it and tests hold it alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from gateway.schema import Consents, NormalizedProfile

# Fields merged key by key rather than replaced.
_KEYED = ("attributes", "identities")
# Derived from another field; travels with it (see overlay()).
_DERIVED = {"phone_country": "phone"}


def overlay(base: NormalizedProfile, later: NormalizedProfile) -> NormalizedProfile:
    """`base` with `later` written over it, by the rules above."""
    changes: dict[str, object] = {}
    for field in later.__struct_fields__:
        source = _DERIVED.get(field)
        if source is not None:
            if getattr(later, source) is not None:
                changes[field] = getattr(later, field)
            continue
        value = getattr(later, field)
        if value is None:
            continue
        earlier = getattr(base, field)
        if field in _KEYED and earlier is not None:
            value = {**earlier, **value}
        elif field == "consents" and earlier is not None:
            value = Consents(
                email=value.email if value.email is not None else earlier.email,
                sms=value.sms if value.sms is not None else earlier.sms,
            )
        changes[field] = value
    return msgspec.structs.replace(base, **changes)


def merged(base: NormalizedProfile, later: Iterable[NormalizedProfile]) -> NormalizedProfile:
    """`base` with each of `later` written over it, in write order."""
    for profile in later:
        base = overlay(base, profile)
    return base
