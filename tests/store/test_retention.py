"""Retention purge and erasure at the store: payloads go, ids and states stay,
and nothing that lost its payload is ever sent. On both engines."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.schema import NormalizedProfile
from gateway.store.base import DeliveryResult, NewRequest, Store, WebhookEvent
from gateway.store.sqlite import SQLiteStore
from tests.store import pg

pytestmark = pytest.mark.anyio


def person(n: int) -> NormalizedProfile:
    return NormalizedProfile(external_id=f"p-{n}", email=f"person{n}@example.org", last_name="Doe")


async def write(store: Store, n: int) -> None:
    await store.accept(NewRequest(f"r{n}", "crm", ["omneo"], [person(n)], time.time()))


async def settle(store: Store, state: str, **more: object) -> None:
    [claim] = await store.claim("omneo", 1, "w", 60)
    await store.record("w", [DeliveryResult(claim.delivery_id, state, **more)])  # type: ignore[arg-type]


async def raw(store_url: str, store: Store) -> bytes:
    if isinstance(store, SQLiteStore):
        path = Path(store.path)
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    rows = []
    for table in ("profile_writes", "webhook_events", "deliveries"):
        rows += [repr(tuple(r)).encode() for r in await pg.execute(store_url, f"TABLE {table}")]
    return b"\n".join(rows)


async def test_purge_removes_settled_payloads_and_keeps_open_ones(
    store: Store, store_url: str
) -> None:
    await write(store, 1)
    await settle(store, "confirmed")
    await write(store, 2)
    await settle(store, "retrying", next_attempt_at=time.time() + 3600)
    await write(store, 3)
    await settle(store, "dead", error="gone")

    # Settled, but not yet for the retention period.
    assert (await store.purge(time.time() - 3600)).writes == 0

    result = await store.purge(time.time() + 1)
    assert result.writes == 2  # p-1 confirmed, p-3 dead; p-2 may still be sent
    assert (await store.purge(time.time() + 1)).writes == 0  # idempotent

    for n, state in ((1, "confirmed"), (3, "dead")):
        view = await store.get_profile(f"p-{n}")
        assert view is not None
        assert (view.payload, view.profile) == ("purged", None)
        assert view.backends["omneo"].state == state  # the state and its id stay
        assert (await store.get_request(f"r{n}")) is not None
    kept = await store.get_profile("p-2")
    assert kept is not None and kept.payload == "stored" and kept.profile == person(2)

    blob = await raw(store_url, store)
    assert b"person1@" not in blob and b"person3@" not in blob
    assert b"person2@" in blob  # no key in this test: the kept one is in clear

    # A dead letter without its payload cannot be sent again.
    replayed = await store.replay(["dead"])
    assert (replayed.requeued, replayed.superseded) == ([], [])


async def test_purge_removes_old_webhook_bodies_but_not_unapplied_ones(store: Store) -> None:
    for n in (1, 2):
        body = f'{{"email": "hook{n}@example.org"}}'.encode()
        event = WebhookEvent("omneo", "profile.created", f"h{n}", body, time.time(), None, "k")
        await store.save_webhook(event)
        if n == 1:
            await store.apply_webhooks("omneo")
    assert (await store.purge(time.time() + 1)).webhook_events == 1


async def test_erasure_removes_every_payload_and_cancels_open_deliveries(
    store: Store, store_url: str
) -> None:
    await write(store, 1)
    await settle(store, "accepted", match_key="person1@example.org", backend_id=None)
    await store.accept(NewRequest("r1b", "crm", ["omneo", "ocamba"], [person(1)], time.time()))
    [in_flight] = await store.claim("ocamba", 1, "w", 60)
    await write(store, 2)  # someone else, untouched
    body = b'{"id": "om-1", "email": "person1@example.org"}'
    await store.save_webhook(
        WebhookEvent(
            "omneo", "profile.created", "h1", body, time.time() + 5, "om-1", "person1@example.org"
        )
    )

    erasure = await store.erase_profile("p-1")
    assert erasure is not None
    assert erasure.writes_erased == 2
    assert (erasure.deliveries_cancelled, erasure.deliveries_in_flight) == (1, 1)
    assert erasure.webhook_events_erased == 1
    assert erasure.delivered_to == ["omneo"]

    # Never sent: nothing is claimable, and the in-flight send's outcome is dropped.
    assert [c.external_id for c in await store.claim("omneo", 10, "w2", 60)] == ["p-2"]
    assert await store.claim("ocamba", 10, "w2", 60) == []
    assert await store.record("w", [DeliveryResult(in_flight.delivery_id, "confirmed")]) == 0
    view = await store.get_profile("p-1")
    assert view is not None and (view.payload, view.profile) == ("erased", None)
    assert {d.state for d in view.backends.values()} == {"erased"}
    # The webhook that named them is applied to nothing.
    assert all(e.confirmations == [] for e in await store.apply_webhooks("omneo"))

    if isinstance(store, SQLiteStore):
        await store._checkpoint()  # readers may have held the WAL a moment ago
    blob = await raw(store_url, store)
    assert b"person1@" not in blob
    assert b"person2@" in blob
    again = await store.erase_profile("p-1")
    assert again is not None and again.writes_erased == 0
    assert await store.erase_profile("nobody") is None
