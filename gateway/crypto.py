"""Sealing personal data at rest: AES-256-GCM under a keyring, and blind indexes.

`GATEWAY_ENCRYPTION_KEYS` is `id:base64key,id2:base64key` (32-byte keys). The
first key seals everything written from now on; every listed key opens. So a
new key is rolled out in two steps (listed second, then first) and old rows
stay readable until `gateway rotate-key` has sealed them again.

A sealed value is `MAGIC | len(id) | id | nonce (12) | ciphertext+tag`. The
associated data names the row it belongs to, so a ciphertext copied into
another row (another person's) fails to open instead of being read as theirs.
A value without MAGIC is a legacy plaintext row, written before a key was set;
MAGIC starts with 0xFF, which no UTF-8 text (so no JSON body) starts with. With
keys set such a row is refused unless `GATEWAY_ALLOW_PLAINTEXT_ROWS` is on (the
migration switch while `gateway rotate-key` seals them): a plaintext row skips
the associated data that binds a value to its row, so anyone able to write to
the database could otherwise slip a profile into another person's row.

Lookups by email (Omneo's webhooks name a profile by it) use a keyed HMAC, the
blind index: equality still works, the email is not stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"\xffgw1"
NONCE_BYTES = 12
KEY_BYTES = 32
TAG_PREFIX = "hmac1:"
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class KeyringError(ValueError):
    """GATEWAY_ENCRYPTION_KEYS is malformed; the message says how (never the key)."""


class SealError(Exception):
    """A stored value cannot be opened: an unlisted key, a different key under
    the same id, or a tampered or misplaced ciphertext."""


def _derive(master: bytes, label: bytes) -> bytes:
    # One master key per id, separate sub-keys per use, so the blind index and
    # the fingerprint reveal nothing about the encryption key.
    return hmac.new(master, b"gateway " + label, hashlib.sha256).digest()


@dataclass(frozen=True)
class _Key:
    id: str
    aead: AESGCM
    index_key: bytes
    fingerprint: str  # identifies the key value in the store's registry


def _key(key_id: str, master: bytes) -> _Key:
    return _Key(
        id=key_id,
        aead=AESGCM(_derive(master, b"seal v1")),
        index_key=_derive(master, b"index v1"),
        fingerprint=_derive(master, b"fingerprint v1")[:8].hex(),
    )


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    """(id, key) pairs from `id:base64key,...`, current first."""
    keys: list[tuple[str, bytes]] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key_id, sep, encoded = item.partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise KeyringError(
                "GATEWAY_ENCRYPTION_KEYS must look like id1:base64key,id2:base64key"
                " (ids: 1-32 of A-Z a-z 0-9 _ -); `gateway generate-key` makes one"
            )
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeyringError(f"encryption key {key_id!r} is not valid base64") from None
        if len(raw) != KEY_BYTES:
            raise KeyringError(
                f"encryption key {key_id!r} has {len(raw)} bytes; AES-256 needs {KEY_BYTES}"
            )
        if any(key_id == seen for seen, _ in keys):
            raise KeyringError(f"encryption key id {key_id!r} is listed twice")
        keys.append((key_id, raw))
    return keys


def generate_key(key_id: str) -> str:
    """A fresh `id:base64key` entry for GATEWAY_ENCRYPTION_KEYS."""
    if not _KEY_ID.fullmatch(key_id):
        raise KeyringError("a key id is 1-32 of A-Z a-z 0-9 _ -")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


PLAINTEXT_REFUSED = (
    "a stored value is not encrypted although GATEWAY_ENCRYPTION_KEYS is set; if it was"
    " stored before a key was set, set GATEWAY_ALLOW_PLAINTEXT_ROWS=true and run"
    " `gateway rotate-key` to seal it"
)


class Sealer:
    """Seals and opens stored payloads. Without keys it stores plaintext (and
    the app warns at start): that keeps a laptop demo simple and old databases
    readable; production sets GATEWAY_ENCRYPTION_KEYS."""

    def __init__(
        self, keys: Sequence[tuple[str, bytes]] = (), *, allow_plaintext: bool = False
    ) -> None:
        self._keys = [_key(key_id, raw) for key_id, raw in keys]
        self._by_id = {k.id: k for k in self._keys}
        # Without keys every row is plaintext, so the switch only matters with keys.
        self.allow_plaintext = allow_plaintext or not self._keys

    @classmethod
    def from_spec(cls, spec: str, *, allow_plaintext: bool = False) -> Sealer:
        return cls(parse_keys(spec), allow_plaintext=allow_plaintext)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @property
    def current_id(self) -> str | None:
        return self._keys[0].id if self._keys else None

    def fingerprints(self) -> dict[str, str]:
        return {k.id: k.fingerprint for k in self._keys}

    # -- payloads ------------------------------------------------------------

    def seal(self, plain: bytes, aad: bytes) -> tuple[bytes, str | None]:
        """(value to store, id of the key that sealed it, None for plaintext)."""
        if not self._keys:
            return plain, None
        key = self._keys[0]
        kid = key.id.encode()
        header = MAGIC + bytes([len(kid)]) + kid
        nonce = os.urandom(NONCE_BYTES)
        return header + nonce + key.aead.encrypt(nonce, plain, header + b"\0" + aad), key.id

    def open(self, stored: bytes, aad: bytes) -> bytes:
        """The plaintext of a stored value; removed (empty) values, and legacy
        plaintext ones where allowed, come back as they are."""
        stored = bytes(stored)
        if not stored.startswith(MAGIC):
            if stored and not self.allow_plaintext:
                raise SealError(PLAINTEXT_REFUSED)
            return stored
        try:
            size = stored[len(MAGIC)]
            start = len(MAGIC) + 1
            key_id = stored[start : start + size].decode("ascii")
        except (IndexError, UnicodeDecodeError):
            raise SealError("a stored value has a damaged header") from None
        key = self._by_id.get(key_id)
        if key is None:
            raise SealError(
                f"a stored value is sealed under key {key_id!r}, which"
                " GATEWAY_ENCRYPTION_KEYS does not list"
            )
        header_end = start + size
        header = stored[:header_end]
        nonce = stored[header_end : header_end + NONCE_BYTES]
        try:
            return key.aead.decrypt(nonce, stored[header_end + NONCE_BYTES :], header + b"\0" + aad)
        except (InvalidTag, ValueError):
            raise SealError(
                f"a stored value failed authentication under key {key_id!r}: it was altered,"
                " copied from another row, or that id now names a different key"
            ) from None

    @staticmethod
    def key_id_of(stored: bytes) -> str | None:
        """Which key sealed a stored value (None: plaintext or removed)."""
        if not stored.startswith(MAGIC) or len(stored) <= len(MAGIC):
            return None
        size = stored[len(MAGIC)]
        return bytes(stored[len(MAGIC) + 1 : len(MAGIC) + 1 + size]).decode("ascii", "replace")

    # -- blind indexes -----------------------------------------------------------

    def _tag(self, key: _Key, value: str) -> str:
        digest = hmac.new(key.index_key, value.encode(), hashlib.sha256).digest()[:16]
        return f"{TAG_PREFIX}{key.id}:{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"

    def tag(self, value: str | None) -> str | None:
        """What is stored in place of a lookup value (the current key's HMAC)."""
        if value is None or not self._keys:
            return value
        return self._tag(self._keys[0], value)

    def tags(self, value: str | None) -> list[str]:
        """Every form `value` may be stored in: one HMAC per listed key, so a row
        tagged before a rotation still matches until `rotate-key` re-tags it."""
        if value is None:
            return []
        if not self._keys:
            return [value]
        return [self._tag(k, value) for k in self._keys]

    def current_tag_prefix(self) -> str | None:
        return f"{TAG_PREFIX}{self._keys[0].id}:" if self._keys else None


# No keys: stores plaintext; the default of stores built without settings (tests, tools).
PLAINTEXT = Sealer()
