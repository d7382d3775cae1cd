"""PII at rest: what the store writes holds no personal data in clear, old rows
stay readable through a key rotation, and a wrong key or a damaged row fails
loudly instead of reading as garbage. On both engines."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.backends.omneo_keys import match_key_of_profile
from gateway.cli_keys import rotate
from gateway.crypto import MAGIC, Sealer, SealError
from gateway.schema import NormalizedProfile
from gateway.store.base import DeliveryResult, NewRequest, Store, WebhookEvent
from gateway.store.pii import KeyringMismatch, open_error, seal_error
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.store import pg

pytestmark = pytest.mark.anyio

EMAIL = "zelda.quincey@example.org"
PHONE = "+61412999888"
NAME = "Quincey"
SECRETS = (EMAIL, PHONE, NAME)

Keys = list[tuple[str, bytes]]


def keys(*ids: str) -> Keys:
    return [(key_id, _KEYS.setdefault(key_id, os.urandom(32))) for key_id in ids]


_KEYS: dict[str, bytes] = {}


def person(external_id: str = "p-1", email: str = EMAIL) -> NormalizedProfile:
    return NormalizedProfile(
        external_id=external_id, email=email, phone=PHONE, first_name="Zelda", last_name=NAME
    )


def request(request_id: str, *profiles: NormalizedProfile) -> NewRequest:
    return NewRequest(request_id, "crm", ["omneo"], list(profiles), 1000.0)


Opener = Callable[..., Store]
Starter = Callable[..., Awaitable[Store]]


@pytest.fixture
def open_store(store_url: str) -> Opener:
    def make(ks: Keys, *, allow_plaintext: bool = False) -> Store:
        sealer = Sealer(ks, allow_plaintext=allow_plaintext)
        if store_url.startswith("sqlite:///"):
            return SQLiteStore.from_url(store_url, sealer=sealer)
        return PostgresStore(store_url, sealer=sealer)

    return make


@pytest.fixture
async def stores(open_store: Opener) -> AsyncIterator[Starter]:
    """Opens stores on one database; closes whatever is still open at the end."""
    opened: list[Store] = []

    async def start(ks: Keys, *, allow_plaintext: bool = False) -> Store:
        s = open_store(ks, allow_plaintext=allow_plaintext)
        await s.open()
        opened.append(s)
        return s

    yield start
    for s in opened:
        await s.close()


async def raw_bytes(store_url: str, store: Store) -> bytes:
    """Everything the engine keeps: for SQLite the file and its WAL as they sit
    on disk; for PostgreSQL every column of every table, as the server hands it."""
    if isinstance(store, SQLiteStore):
        return b"".join(
            p.read_bytes()
            for p in Path(store.path).parent.iterdir()
            if p.name.startswith(Path(store.path).name)
        )
    out = []
    for table in pg.TABLES.split(","):
        for row in await pg.execute(store_url, f"SELECT * FROM {table.strip()}"):
            out.append(repr(tuple(row)).encode())
    return b"\n".join(out)


def contains_pii(blob: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in blob or s.lower().encode() in blob]


async def write_deliver_and_confirm(store: Store, external_id: str, request_id: str) -> None:
    """A write, Omneo accepting it (match key = the email), and its webhook."""
    await store.accept(request(request_id, person(external_id)))
    [claim] = await store.claim("omneo", 10, "w", 60)
    key = match_key_of_profile(claim.profile, "email")
    await store.record("w", [DeliveryResult(claim.delivery_id, "accepted", match_key=key)])
    body = f'{{"id": 7, "email": "{EMAIL}", "last_name": "{NAME}"}}'.encode()
    await store.save_webhook(
        WebhookEvent("omneo", "profile.created", request_id, body, 2e9, "7", EMAIL)
    )


async def test_no_personal_data_in_clear_after_a_write(stores: Starter, store_url: str) -> None:
    store = await stores(keys("k1"))
    await write_deliver_and_confirm(store, "p-1", "r1")
    [applied] = await store.apply_webhooks("omneo")
    assert applied.result == "applied"  # the blind index still matches the email
    view = await store.get_profile("p-1")
    assert view is not None and view.profile is not None
    assert (view.profile.email, view.profile.phone, view.profile.last_name) == (EMAIL, PHONE, NAME)
    assert view.payload == "stored"
    assert contains_pii(await raw_bytes(store_url, store)) == []


async def test_without_a_key_payloads_are_plaintext(stores: Starter, store_url: str) -> None:
    store = await stores([])
    await store.accept(request("r1", person()))
    # The check above is not vacuous: the same write without a key shows the data.
    assert contains_pii(await raw_bytes(store_url, store)) != []


async def test_rotation_keeps_old_rows_readable_then_retires_the_old_key(
    stores: Starter, open_store: Opener, store_url: str
) -> None:
    old = await stores(keys("k1"))
    await write_deliver_and_confirm(old, "p-1", "r1")
    await old.close()

    # Step 1 of the procedure: the new key first, the old one still listed.
    both = await stores(keys("k2", "k1"))
    await both.accept(request("r2", person("p-2")))
    first = await both.get_profile("p-1")
    assert first is not None and first.profile is not None and first.profile.email == EMAIL
    # A webhook arriving now still meets the delivery indexed under k1.
    [applied] = await both.apply_webhooks("omneo")
    assert applied.result == "applied"
    status = await both.seal_status()
    assert (status.profile_writes, status.webhook_events) == (1, 1)

    report = await rotate(both, lambda p: match_key_of_profile(p, "email"), span=1)
    assert report.resealed == {"profile_writes": 1, "webhook_events": 1, "deliveries": 0}
    assert report.retired == ["k1"]
    assert (await both.seal_status()).total == 0
    await both.close()

    # Step 3: the old key is gone; everything opens with the new one alone.
    new = await stores(keys("k2"))
    for external_id in ("p-1", "p-2"):
        view = await new.get_profile(external_id)
        assert view is not None and view.profile is not None and view.profile.email == EMAIL
    assert contains_pii(await raw_bytes(store_url, new)) == []


async def test_legacy_plaintext_rows_are_read_then_encrypted_by_rotation(
    stores: Starter, store_url: str
) -> None:
    plain = await stores([])
    await write_deliver_and_confirm(plain, "p-1", "r1")
    await plain.close()

    # With a key set, rows in clear are refused until the migration switch is on.
    with pytest.raises(KeyringMismatch, match="GATEWAY_ALLOW_PLAINTEXT_ROWS=true"):
        await stores(keys("k1"))
    store = await stores(keys("k1"), allow_plaintext=True)
    view = await store.get_profile("p-1")
    assert view is not None and view.profile is not None and view.profile.email == EMAIL
    status = await store.seal_status()
    assert (status.profile_writes, status.webhook_events, status.deliveries_to_retag) == (1, 1, 1)
    report = await rotate(store, lambda p: match_key_of_profile(p, "email"))
    assert report.retagged == 1
    # The re-indexed delivery is confirmed by a webhook keyed by the same email.
    body = b'{"id": 7, "email": "other-body"}'
    await store.save_webhook(
        WebhookEvent("omneo", "profile.updated", "again", body, 2e9, "7", EMAIL)
    )
    results = [e.result for e in await store.apply_webhooks("omneo")]
    assert "applied" in results
    # On SQLite the plaintext rows' pages also sat in the WAL: rotation ends
    # with a checkpoint, and secure_delete zeroes what the updates replaced.
    assert contains_pii(await raw_bytes(store_url, store)) == []
    await store.close()
    # Once rotated, the switch goes off again.
    sealed = await stores(keys("k1"))
    view = await sealed.get_profile("p-1")
    assert view is not None and view.profile is not None and view.profile.email == EMAIL


async def test_with_a_key_a_row_in_clear_is_refused(stores: Starter, store_url: str) -> None:
    """A plaintext value skips the associated data that binds a sealed one to its
    row: anyone able to write to the database could plant a profile that way."""
    store = await stores(keys("k1"))
    await store.accept(request("r1", person("p-1")))
    planted = b'{"external_id": "p-1", "email": "attacker@example.net"}'
    await _edit_bodies(store_url, store, lambda rows: {0: planted})
    with pytest.raises(SealError, match="GATEWAY_ALLOW_PLAINTEXT_ROWS"):
        await store.get_profile("p-1")
    [] = await store.claim("omneo", 10, "w", 60)  # not sent: failed, with the reason
    [failed] = await store.list_deliveries(["failed"])
    assert failed.last_error is not None and "not encrypted" in failed.last_error
    # The migration switch reads it (as before this check existed).
    assert Sealer(keys("k1"), allow_plaintext=True).open(planted, b"any") == planted


Bodies = dict[int, bytes]  # position in request r1 -> stored body


async def _edit_bodies(store_url: str, store: Store, edit: Callable[[Bodies], Bodies]) -> None:
    """Change stored bodies behind the store's back, as a disk fault or an
    attacker with database access would."""
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path)
        rows = dict(conn.execute("SELECT position, body FROM profile_writes").fetchall())
        for position, body in edit(rows).items():
            conn.execute("UPDATE profile_writes SET body = ? WHERE position = ?", (body, position))
        conn.commit()
        conn.close()
        return
    records = await pg.execute(store_url, "SELECT position, body FROM profile_writes")
    for position, body in edit({r["position"]: r["body"] for r in records}).items():
        await pg.execute(
            store_url, "UPDATE profile_writes SET body = $1 WHERE position = $2", body, position
        )


async def test_a_tampered_ciphertext_fails_loudly_and_is_never_sent(
    stores: Starter, store_url: str
) -> None:
    store = await stores(keys("k1"))
    await store.accept(request("r1", person("p-1")))
    # One bit flipped in the ciphertext.
    await _edit_bodies(
        store_url, store, lambda b: {0: b[0][:-20] + bytes([b[0][-20] ^ 1]) + b[0][-19:]}
    )
    with pytest.raises(SealError, match="failed authentication"):
        await store.get_profile("p-1")
    assert await store.claim("omneo", 10, "w", 60) == []
    [failed] = await store.list_deliveries(["failed"])
    assert failed.last_error is not None and "failed authentication" in failed.last_error


async def test_a_ciphertext_moved_to_another_row_does_not_open(
    stores: Starter, store_url: str
) -> None:
    store = await stores(keys("k1"))
    await store.accept(request("r1", person("p-1"), person("p-2", "other@example.org")))
    await _edit_bodies(store_url, store, lambda b: {1: b[0]})
    first = await store.get_profile("p-1")
    assert first is not None and first.profile is not None
    with pytest.raises(SealError):
        await store.get_profile("p-2")


@pytest.mark.parametrize(
    ("configured", "message"),
    [
        (["other"], "does not list"),  # the old key was dropped too early
        ([], "set GATEWAY_ENCRYPTION_KEYS"),  # the key was forgotten altogether
        (["k1-evil"], "different value"),  # the same id, another key
    ],
)
async def test_a_missing_or_wrong_key_stops_the_start(
    stores: Starter, open_store: Opener, configured: list[str], message: str
) -> None:
    store = await stores(keys("k1"))
    await store.accept(request("r1", person()))
    await store.close()
    ks = [("k1", os.urandom(32))] if configured == ["k1-evil"] else keys(*configured)
    late = open_store(ks)
    with pytest.raises(KeyringMismatch, match=message):
        await late.open()
    if isinstance(late, SQLiteStore):
        await late.close()


def test_sealed_values_are_bound_to_their_key_and_row() -> None:
    sealer = Sealer(keys("k1"))
    sealed, key_id = sealer.seal(b'{"email": "x"}', b"row-1")
    assert key_id == "k1" and sealed.startswith(MAGIC) and b"email" not in sealed
    assert sealer.open(sealed, b"row-1") == b'{"email": "x"}'
    with pytest.raises(SealError):
        sealer.open(sealed, b"row-2")
    # Two seals of the same value differ (a fresh nonce each), tags do not.
    assert sealer.seal(b"same", b"r")[0] != sealer.seal(b"same", b"r")[0]
    assert sealer.tag(EMAIL) == sealer.tag(EMAIL) != EMAIL
    assert Sealer().open(b'{"legacy": 1}', b"any") == b'{"legacy": 1}'


async def test_rotation_reseals_backend_error_texts_before_retiring_a_key(
    stores: Starter, store_url: str
) -> None:
    old = await stores(keys("k1"))
    await old.accept(request("r1", person("p-1")))
    [claim] = await old.claim("omneo", 10, "w", 60)
    quoted = f"omneo: HTTP 422: {EMAIL} belongs to another profile"
    await old.record("w", [DeliveryResult(claim.delivery_id, "failed", error=quoted)])
    assert contains_pii(await raw_bytes(store_url, old)) == []
    await old.close()

    both = await stores(keys("k2", "k1"))
    assert (await both.seal_status()).delivery_errors == 1
    report = await rotate(both, lambda p: match_key_of_profile(p, "email"), span=1)
    assert report.resealed["deliveries"] == 1
    assert report.retired == ["k1"]
    await both.close()

    new = await stores(keys("k2"))
    [failed] = await new.list_deliveries(["failed"])
    assert failed.last_error == quoted
    assert contains_pii(await raw_bytes(store_url, new)) == []
    # A text under a key no longer listed reads as a note, not as a failed page.
    stored = seal_error(Sealer(keys("k2")), failed.delivery_id, quoted)
    assert stored is not None and EMAIL not in stored
    note = open_error(Sealer(keys("k3")), failed.delivery_id, stored)
    assert note is not None and "cannot open it" in note and EMAIL not in note
