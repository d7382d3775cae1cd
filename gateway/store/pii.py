"""What both engines share for personal data at rest: which row a sealed value
is bound to, how lookup tags are stored, and the registry of keys in use.

The registry (`encryption_keys`: id and fingerprint of every key that has
sealed something) lets a process refuse to start with a key missing, or with a
different key under a known id, instead of failing on the first old row.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.crypto import TAG_PREFIX, Sealer, SealError
from gateway.schema import NormalizedProfile
from gateway.store.base import Claim, StoreError

_decode_profile = msgspec.json.Decoder(NormalizedProfile).decode

# Payload columns emptied by a purge or an erasure hold this: no bytes left.
REMOVED = b""
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


def open_claims(rows: list[Any], sealer: Sealer) -> tuple[list[Claim], list[tuple[int, str]]]:
    """Claims from rows (id, external_id, attempts after the claim, created_at,
    body, backend_id, request_id, position), and the (id, reason) of deliveries
    that cannot be sent: a payload removed (purge and erasure never leave one
    open; this guards a replay racing a purge on PostgreSQL) or one that fails
    to decrypt. One bad row fails alone instead of stalling every claim."""
    claims: list[Claim] = []
    unsendable: list[tuple[int, str]] = []
    for r in rows:
        if not r[4]:
            unsendable.append((r[0], "its payload was removed (retention or erasure)"))
            continue
        try:
            profile = _decode_profile(sealer.open(r[4], write_aad(r[6], r[7])))
        except SealError as exc:
            unsendable.append((r[0], str(exc)))
            continue
        claims.append(
            Claim(
                delivery_id=r[0],
                external_id=r[1],
                profile=profile,
                attempts=r[2],
                created_at=r[3],
                backend_id=r[5],
            )
        )
    return claims, unsendable


def open_profile(
    sealer: Sealer, body: bytes, request_id: str, position: int
) -> NormalizedProfile | None:
    """The stored profile of a write, None once removed."""
    if not body:
        return None
    # A SealError goes up as it is: the caller gets a 500, not silent garbage.
    return _decode_profile(sealer.open(body, write_aad(request_id, position)))
