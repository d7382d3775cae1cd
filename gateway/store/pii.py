"""What both engines share for personal data at rest: which row a sealed value
is bound to, how lookup tags are stored, and the registry of keys in use.

The registry (`encryption_keys`: id and fingerprint of every key that has
sealed something) lets a process refuse to start with a key missing, or with a
different key under a known id, instead of failing on the first old row.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from gateway.crypto import TAG_PREFIX, Sealer, SealError
from gateway.schema import NormalizedProfile
from gateway.store.base import Claim, StoreError
from gateway.store.merge import merged

_decode_profile = msgspec.json.Decoder(NormalizedProfile).decode

# Payload columns emptied by a purge or an erasure hold this: no bytes left.
REMOVED = b""
# What an erased write's deliveries say instead of a backend's error text (the
# .sql files that write it spell it out too).
ERASED_ERROR = "erased on request"
# How many ids a retention, rotation or erasure step covers: each step is one
# short transaction (on SQLite, one job of the writer thread), so accepted
# writes never wait long behind maintenance.
SPAN = 2000


class KeyringMismatch(StoreError):
    """The store holds values this process could not open; it must not start."""


def write_aad(request_id: str, position: int) -> bytes:
    return f"profile_writes:{request_id}:{position}".encode()


def event_aad(source: str, event: str, body_hash: str) -> bytes:
    return f"webhook_events:{source}:{event}:{body_hash}".encode()


# A sealed `last_error` as stored in its text column: the prefix, the key's id
# (so rotation finds what is not under the current key without opening it),
# then the sealed value in base64.
ERROR_PREFIX = "sealed:"


def error_aad(delivery_id: int) -> bytes:
    return f"deliveries:{delivery_id}:last_error".encode()


def error_prefix(key_id: str | None) -> str:
    return f"{ERROR_PREFIX}{key_id or ''}:"


def seal_error(sealer: Sealer, delivery_id: int, text: str | None) -> str | None:
    """A backend's error text as stored: sealed when a key is set (vendors quote
    the profile back: "email x@y.z already exists"), as it is otherwise."""
    if text is None or not sealer.enabled:
        return text
    sealed, key_id = sealer.seal(text.encode(), error_aad(delivery_id))
    return error_prefix(key_id) + base64.b64encode(sealed).decode()


def open_error(sealer: Sealer, delivery_id: int, stored: str | None) -> str | None:
    """The text of a stored `last_error`. The gateway's own texts ("erased on
    request", ...) are stored as they are. One that cannot be opened reads as a
    note saying so: an error text must not make a status page fail."""
    if stored is None or not stored.startswith(ERROR_PREFIX):
        return stored
    key_id = stored[len(ERROR_PREFIX) :].partition(":")[0]
    try:
        raw = base64.b64decode(stored[len(error_prefix(key_id)) :], validate=True)
        return sealer.open(raw, error_aad(delivery_id)).decode("utf-8", "replace")
    except (SealError, binascii.Error, ValueError):
        return f"(the backend's error text is sealed under key {key_id!r}, which cannot open it)"


def reseal_error(sealer: Sealer, delivery_id: int, stored: str) -> str:
    """A stored `last_error` under the current key (a clear one gets sealed)."""
    text = stored
    if stored.startswith(ERROR_PREFIX):
        key_id = stored[len(ERROR_PREFIX) :].partition(":")[0]
        raw = base64.b64decode(stored[len(error_prefix(key_id)) :], validate=True)
        # Opened strictly: a text that cannot be opened must stop the rotation,
        # not be sealed again as its own unreadable note.
        text = sealer.open(raw, error_aad(delivery_id)).decode("utf-8", "replace")
    resealed = seal_error(sealer, delivery_id, text)
    assert resealed is not None
    return resealed


def match_values(profile: NormalizedProfile) -> set[str]:
    """Every key an Omneo webhook may name this person by, whatever
    GATEWAY_OMNEO_MATCH_CRITERIA was when it arrived: the email and each identity
    (as gateway.backends.omneo_keys forms them)."""
    values = {f"{handle}:{identifier}" for handle, identifier in (profile.identities or {}).items()}
    if profile.email:
        values.add(profile.email.lower())
    return values


def stored_forms(sealer: Sealer, values: set[str]) -> set[str]:
    """What those keys look like in a stored `match_key`: their tag under every
    listed key, and as they are (stored before a key was set)."""
    return values | {tag for value in values for tag in sealer.tags(value)}


def event_tags(sealer: Sealer, match_key: str | None) -> str | None:
    """A webhook's match key as stored: its tag under every listed key (see
    `Sealer.tags`), space-separated, so that it meets deliveries indexed
    before the newest key became current."""
    tags = sealer.tags(match_key)
    return " ".join(tags) if tags else None


def retag_event(sealer: Sealer, stored: str | None) -> str | None:
    """A stored webhook's match key after a rotation: a plaintext one (stored
    before any key was set) becomes tags; tags stay (their plaintext is gone)."""
    if stored is None or stored.startswith(TAG_PREFIX):
        return stored
    return event_tags(sealer, stored)


def split_tags(stored: str) -> list[str]:
    # Plaintext match keys (no key configured, or older rows) are one value.
    return stored.split(" ") if stored.startswith(TAG_PREFIX) else [stored]


def plaintext_refused(tables: list[str]) -> KeyringMismatch:
    """Why a process with keys will not open a store holding values in clear."""
    return KeyringMismatch(
        f"{' and '.join(tables)} hold rows stored in clear, before GATEWAY_ENCRYPTION_KEYS"
        " was set; set GATEWAY_ALLOW_PLAINTEXT_ROWS=true (on the gateways and for"
        " `gateway rotate-key`), run `gateway rotate-key` to encrypt them, then turn it off"
    )


def check_keyring(sealer: Sealer, registered: dict[str, str]) -> list[tuple[str, str]]:
    """Raise unless every key the store has used is listed with the same value;
    returns the (id, fingerprint) pairs to register (the current key if new)."""
    listed = sealer.fingerprints()
    if registered and not sealer.enabled:
        raise KeyringMismatch(
            "the store holds payloads encrypted under key(s) "
            + ", ".join(sorted(registered))
            + "; set GATEWAY_ENCRYPTION_KEYS"
        )
    for key_id, fingerprint in sorted(registered.items()):
        if key_id not in listed:
            raise KeyringMismatch(
                f"the store holds payloads encrypted under key {key_id!r}, which"
                " GATEWAY_ENCRYPTION_KEYS does not list; keep it listed until"
                " `gateway rotate-key` has finished"
            )
        if listed[key_id] != fingerprint:
            raise KeyringMismatch(
                f"GATEWAY_ENCRYPTION_KEYS gives key {key_id!r} a different value than the"
                " one that encrypted the stored payloads"
            )
    current = sealer.current_id
    if current is None or current in registered:
        return []
    return [(current, listed[current])]


def open_claims(
    rows: list[Any],
    sealer: Sealer,
    carried: Sequence[Any] = (),
    merged_now: Collection[int] = (),
) -> tuple[list[Claim], list[tuple[int, str]]]:
    """Claims from rows (id, external_id, attempts after the claim, created_at,
    body, backend_id, request_id, position, lane, the request's resend and
    traceparent), and
    the (id, reason) of deliveries
    that cannot be sent: a payload removed (purge and erasure never leave one
    open; this guards a replay racing a purge on PostgreSQL) or one that fails
    to decrypt. One bad row fails alone instead of stalling every claim.

    `carried`: the writes merged into the claimed deliveries, as rows
    (carrier id, delivery id, body, request_id, position, ..., that write's
    request's traceparent and resend as the last two columns) in write order;
    each claim's profile is its own with theirs written over it
    (gateway/store/merge.py). A carrier one of whose writes cannot be opened
    cannot be sent either: without it, it would send older data as newest.
    `merged_now`: the carried deliveries this claim ended `merged`."""
    by_carrier: dict[int, list[Any]] = {}
    for c in carried:
        by_carrier.setdefault(c[0], []).append(c)
    claims: list[Claim] = []
    unsendable: list[tuple[int, str]] = []
    for r in rows:
        carries = by_carrier.get(r[0], [])
        try:
            profile = _open_body(sealer, r[4], r[6], r[7])
            later = [_open_body(sealer, c[2], c[3], c[4]) for c in carries]
        except _Unsendable as exc:
            unsendable.append((r[0], str(exc)))
            continue
        claims.append(
            Claim(
                delivery_id=r[0],
                external_id=r[1],
                profile=merged(profile, later),
                attempts=r[2],
                created_at=r[3],
                backend_id=r[5],
                lane=r[8],
                carries=tuple(c[1] for c in carries),
                merged_now=sum(1 for c in carries if c[1] in merged_now),
                # A carried write that asked to resend makes the whole payload go
                # (claims no longer merge one, but a queue merged before may hold one).
                resend=bool(r[9]) or any(bool(c[-1]) for c in carries),
                traceparent=r[10],
                carried_traceparents=tuple(dict.fromkeys(c[-2] for c in carries if c[-2])),
            )
        )
    return claims, unsendable


class _Unsendable(Exception):
    pass


def _open_body(sealer: Sealer, body: bytes, request_id: str, position: int) -> NormalizedProfile:
    if not body:
        raise _Unsendable("its payload was removed (retention or erasure)")
    try:
        return _decode_profile(sealer.open(body, write_aad(request_id, position)))
    except SealError as exc:
        raise _Unsendable(str(exc)) from exc


def open_profile(
    sealer: Sealer, body: bytes, request_id: str, position: int
) -> NormalizedProfile | None:
    """The stored profile of a write, None once removed."""
    if not body:
        return None
    # A SealError goes up as it is: the caller gets a 500, not silent garbage.
    return _decode_profile(sealer.open(body, write_aad(request_id, position)))
