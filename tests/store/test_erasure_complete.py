"""Erasure and retention leave nothing of a person: not in any table, not in the
SQLite file or its WAL. On both engines, with and without encryption keys."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.crypto import Sealer
from gateway.schema import NormalizedProfile
from gateway.store.base import DeliveryResult, NewRequest, Store, WebhookEvent
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.store import pg

pytestmark = pytest.mark.anyio

EMAIL = "wilhelmina.tarrant@example.org"
PHONE = "+61412777666"
FIRST, LAST = "Wilhelmina", "Tarrant"
SHOPIFY = "shop-8f3a9c"
# The caller's Idempotency-Key, built from the person's email as callers do.
IDEMPOTENCY_KEY = f"signup:{EMAIL}"
BODY_HASH = hashlib.sha256(f"request body of {EMAIL}".encode()).hexdigest()
VENDOR_ERROR = f"import_batch error 12: {EMAIL} ({FIRST} {LAST}, {PHONE}) is already taken"


def person(external_id: str, email: str = EMAIL) -> NormalizedProfile:
    return NormalizedProfile(
        external_id=external_id,
        email=email,
        phone=PHONE,
        first_name=FIRST,
        last_name=LAST,
        identities={"shopify_id": SHOPIFY},
    )


@pytest.fixture(params=["plaintext", "encrypted"])
def sealer(request: pytest.FixtureRequest) -> Sealer:
    return Sealer([("k1", os.urandom(32))]) if request.param == "encrypted" else Sealer()


@pytest.fixture
async def sealed_store(store_url: str, sealer: Sealer) -> AsyncIterator[Store]:
    s: Store = (
        SQLiteStore.from_url(store_url, sealer=sealer)
        if store_url.startswith("sqlite:///")
        else PostgresStore(store_url, sealer=sealer)
    )
    await s.open()
    yield s
    await s.close()


def traces(sealer: Sealer) -> list[str]:
    """What would show the person: their data, the caller's key and body hash,
    and the blind-index tags their email and identity are looked up by."""
    found = [EMAIL, PHONE, PHONE.lstrip("+"), FIRST, LAST, SHOPIFY, IDEMPOTENCY_KEY, BODY_HASH]
    found += sealer.tags(EMAIL) + sealer.tags(f"shopify_id:{SHOPIFY}")
    return sorted(set(found))


async def everything(store_url: str, store: Store) -> bytes:
    """For SQLite the database file and its WAL as they are on disk; for
    PostgreSQL every row of every table of the schema, as text."""
    if isinstance(store, SQLiteStore):
        path = Path(store.path)
        return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))
    tables = await pg.execute(
        store_url,
        "SELECT quote_ident(table_name) AS t FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    assert len(tables) >= 8
    out = []
    for row in tables:
        for r in await pg.execute(store_url, f"SELECT x::text AS x FROM {row['t']} x"):
            out.append(r["x"].encode())
    return b"\n".join(out)


def found_in(blob: bytes, sealer: Sealer) -> list[str]:
    return [t for t in traces(sealer) if t.encode() in blob or t.lower().encode() in blob]


async def a_person_everywhere(store: Store, external_id: str = "cust-77") -> None:
    """The person written twice (once with an Idempotency-Key), delivered to
    Omneo (confirmed by a webhook) and refused by import_batch with a text that
    quotes them; plus Omneo webhooks naming them that matched no delivery."""
    # Before any delivery: matches nothing, by email and by identity.
    for n, (key, body) in enumerate(
        [
            (EMAIL, f'{{"id": 901, "email": "{EMAIL}", "first_name": "{FIRST}"}}'),
            (
                f"shopify_id:{SHOPIFY}",
                f'{{"id": 902, "identities": [{{"handle": "shopify_id",'
                f' "identifier": "{SHOPIFY}"}}], "last_name": "{LAST}"}}',
            ),
        ]
    ):
        await store.save_webhook(
            WebhookEvent(
                source="omneo",
                event="profile.created",
                body_hash=f"early-{external_id}-{n}",
                body=body.encode(),
                received_at=time.time(),
                backend_id=str(901 + n),
                match_key=key,
            )
        )
    assert {a.result for a in await store.apply_webhooks("omneo")} == {"unmatched"}
    await store.accept(
        NewRequest(
            f"r1-{external_id}",
            "crm",
            ["omneo", "import_batch"],
            [person(external_id)],
            time.time(),
            idempotency_key=IDEMPOTENCY_KEY,
            body_hash=BODY_HASH,
        )
    )
    for backend, result in (
        ("omneo", {"state": "accepted", "match_key": EMAIL}),
        ("import_batch", {"state": "failed", "error": VENDOR_ERROR}),
    ):
        [claim] = await store.claim(backend, 10, "w", 60)  # type: ignore[arg-type]
        await store.record("w", [DeliveryResult(claim.delivery_id, **result)])  # type: ignore[arg-type]
    confirming = f'{{"id": 7, "email": "{EMAIL}", "mobile_phone": "{PHONE}"}}'.encode()
    await store.save_webhook(
        WebhookEvent(
            source="omneo",
            event="profile.created",
            body_hash=f"confirm-{external_id}",
            body=confirming,
            received_at=time.time() + 1,
            backend_id="7",
            match_key=EMAIL,
        )
    )
    assert [a.result for a in await store.apply_webhooks("omneo")] == ["applied"]
    await store.accept(
        NewRequest(f"r2-{external_id}", "crm", ["omneo"], [person(external_id)], time.time())
    )


async def test_erasure_leaves_nothing_of_the_person_in_any_table(
    sealed_store: Store, store_url: str, sealer: Sealer
) -> None:
    store = sealed_store
    await a_person_everywhere(store)
    other = NormalizedProfile(external_id="cust-78", email="keep@example.org", last_name="Keep")
    await store.accept(NewRequest("r-other", "crm", ["omneo"], [other], time.time()))
    # Not vacuous: before the erasure the search finds the person (the key and
    # the body hash are in clear whatever the keys; with none, everything is).
    before = found_in(await everything(store_url, store), sealer)
    assert IDEMPOTENCY_KEY in before and BODY_HASH in before
    if not sealer.enabled:
        assert set(before) >= {EMAIL, FIRST, LAST, SHOPIFY}
    [failed] = await store.list_deliveries(["failed"])
    assert failed.last_error == VENDOR_ERROR  # read back whole, sealed or not

    erasure = await store.erase_profile("cust-77")
    assert erasure is not None
    # The confirming event and both that matched nothing (by email, by identity).
    assert erasure.webhook_events_erased == 3

    assert found_in(await everything(store_url, store), sealer) == []
    kept = await store.get_profile("cust-78")
    assert kept is not None and kept.profile == other
    # A retry of the erased request under its key is a new request, not a replay.
    again = await store.accept(
        NewRequest(
            "r3",
            "crm",
            ["omneo"],
            [person("cust-77")],
            time.time(),
            idempotency_key=IDEMPOTENCY_KEY,
            body_hash=BODY_HASH,
        )
    )
    assert not again.replayed and again.request_id == "r3"


async def test_retention_purges_webhooks_idempotency_keys_and_error_texts(
    sealed_store: Store, store_url: str, sealer: Sealer
) -> None:
    store = sealed_store
    await a_person_everywhere(store)
    # The second write still waits for Omneo: settle it so every write can go.
    [claim] = await store.claim("omneo", 10, "w", 60)
    await store.record("w", [DeliveryResult(claim.delivery_id, "confirmed")])

    result = await store.purge(time.time() + 60)
    assert (result.writes, result.webhook_events, result.idempotency_keys) == (2, 3, 1)
    assert found_in(await everything(store_url, store), sealer) == []
    [failed] = await store.list_deliveries(["failed"])
    assert failed.last_error == "removed by retention"
    # Within the retention period nothing goes.
    await store.accept(
        NewRequest(
            "r9", "crm", ["omneo"], [person("cust-9")], time.time(), IDEMPOTENCY_KEY, BODY_HASH
        )
    )
    assert (await store.purge(time.time() - 3600)).idempotency_keys == 0
    replay = await store.accept(
        NewRequest(
            "r10", "crm", ["omneo"], [person("cust-9")], time.time(), IDEMPOTENCY_KEY, BODY_HASH
        )
    )
    assert replay.replayed and replay.request_id == "r9"


async def test_backend_error_texts_are_sealed_at_rest_with_a_key(
    sealed_store: Store, store_url: str, sealer: Sealer
) -> None:
    store = sealed_store
    await store.accept(NewRequest("r1", "crm", ["import_batch"], [person("p-1")], time.time()))
    [claim] = await store.claim("import_batch", 10, "w", 60)
    await store.record("w", [DeliveryResult(claim.delivery_id, "dead", error=VENDOR_ERROR)])
    [dead] = await store.list_deliveries(["dead"])
    assert dead.last_error == VENDOR_ERROR
    view = await store.get_profile("p-1")
    assert view is not None and view.backends["import_batch"].last_error == VENDOR_ERROR
    stored = VENDOR_ERROR.encode() in await everything(store_url, store)
    assert stored is not sealer.enabled
