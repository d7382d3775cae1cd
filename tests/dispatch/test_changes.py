"""Change detection end to end: a real store (both engines), the dispatcher
and the Ocamba adapter against a scripted Ocamba. Each `step` is one worker's
claim and send; what reaches the fake is what Ocamba would have been sent."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from gateway.backends.base import Item
from gateway.backends.import_batch import ImportBatchAdapter
from gateway.backends.ocamba import CANNOT_UPDATE, CREATE_PATH, IMPORT_PATH, OcambaAdapter
from gateway.backends.omneo import OmneoAdapter
from gateway.clock import FakeClock
from gateway.config import Settings
from gateway.crypto import Sealer, generate_key, parse_keys
from gateway.dispatch import changes
from gateway.dispatch.dispatcher import Dispatcher
from gateway.mapping.model import OcambaMapping
from gateway.metrics import Metrics
from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import NewRequest, Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.backends.fakes import Backend as FakeBackend
from tests.backends.fakes import sender
from tests.backends.test_import_batch import ok_for_each
from tests.backends.test_ocamba import FakeOcamba
from tests.backends.test_omneo import queued
from tests.store import pg

pytestmark = pytest.mark.anyio

START = 1_000_000.0
_ids = itertools.count()
PERSON: dict[str, Any] = {
    "external_id": "p1",
    "email": "jane@example.com",
    "full_name": "Jane Doe",
    "attributes": {"plan": "gold", "tier": "2"},
}


def open_store(url: str, sealer: Sealer) -> Store:
    if url.startswith("sqlite:///"):
        return SQLiteStore.from_url(url, sealer=sealer)
    return PostgresStore(url, sealer=sealer)


@pytest.fixture
async def keyed_store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url, Sealer(parse_keys(generate_key("k1"))))
    await s.open()
    yield s
    await s.close()


class Rig:
    def __init__(
        self, store: Store, mapping: OcambaMapping | None = None, backend: Backend = "ocamba"
    ) -> None:
        self.store = store
        self.backend = backend
        self.clock = FakeClock(START)
        store.clock = self.clock
        self.ocamba = FakeOcamba()
        settings = Settings(
            ocamba_url="http://ocamba.test",
            omneo_url="http://omneo.test",
            import_batch_url="http://import-batch.test",
            batch_linger=0.0,
            ocamba_settle=0.0,
            workers_per_backend=1,
        )
        self.adapter: OcambaAdapter | OmneoAdapter | ImportBatchAdapter
        if backend == "ocamba":
            self.fake: FakeBackend = self.ocamba
            self.adapter = OcambaAdapter(
                settings, sender("ocamba", self.ocamba.client()), mapping=mapping
            )
        elif backend == "omneo":
            self.fake = FakeBackend(queued)
            self.adapter = OmneoAdapter(settings, sender("omneo", self.fake.client()))
        else:
            self.fake = FakeBackend(ok_for_each)
            self.adapter = ImportBatchAdapter(settings, sender("import_batch", self.fake.client()))
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(
            store, {backend: self.adapter}, settings, self.metrics, clock=self.clock
        )
        # One process here: leader election (tested elsewhere) is not in the way.
        self.dispatcher._exclusive.clear()

    async def write(self, resend: bool = False, **changes: Any) -> None:
        body = {**PERSON, **changes}
        await self.store.accept(
            NewRequest(
                request_id=f"r-{next(_ids)}",
                app="crm",
                targets=[self.backend],
                profiles=[msgspec.convert(body, NormalizedProfile)],
                received_at=self.clock.now(),
                resend=resend,
            )
        )

    async def step(self) -> tuple[str, str | None]:
        """Claim and send one batch; the person's latest delivery (state, error)."""
        await self.dispatcher._step(self.backend, self.adapter)
        view = await self.store.get_profile("p1")
        assert view is not None
        d = view.backends[self.backend]
        return d.state, d.last_error

    def imports(self) -> list[dict[str, Any]]:
        """The custom properties of each import, by name -> value."""
        return [
            {n: p["value"] for n, p in body["profiles"][0]["custom_properties"].items()}
            for body in self.ocamba.bodies(IMPORT_PATH)
        ]

    def count(self, outcome: str) -> float:
        value = self.metrics.deliveries.labels(self.backend, outcome)._value.get()
        return float(value)


async def stored_digests(store_url: str) -> dict[str, str]:
    query = "SELECT digests FROM sent_fields WHERE external_id = 'p1' AND backend = 'ocamba'"
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            rows = [r[0] for r in conn.execute(query)]
    else:
        text_query = query.replace("digests", "digests::text AS digests", 1)
        rows = [r["digests"] for r in await pg.execute(store_url, text_query)]
    assert len(rows) == 1
    loaded: dict[str, str] = json.loads(rows[0])
    return loaded


async def test_the_same_profile_twice_is_unchanged_and_never_reaches_ocamba(store: Store) -> None:
    rig = Rig(store)
    await rig.write()
    assert await rig.step() == ("accepted", None)
    assert rig.ocamba.paths() == [CREATE_PATH, IMPORT_PATH]
    await rig.write()
    assert await rig.step() == ("unchanged", changes.UNCHANGED)
    assert rig.ocamba.paths() == [CREATE_PATH, IMPORT_PATH]  # no call at all
    assert rig.count("unchanged") == 1
    assert rig.count("accepted") == 1


async def test_one_changed_property_is_the_only_one_imported(store: Store) -> None:
    rig = Rig(store)
    await rig.write()
    await rig.step()
    await rig.write(attributes={"plan": "platinum", "tier": "2"})
    assert await rig.step() == ("accepted", None)
    assert rig.imports() == [{"plan": "gold", "tier": "2"}, {"plan": "platinum"}]
    assert rig.ocamba.paths().count(CREATE_PATH) == 1
    # What Ocamba now has is remembered, merged: the same write again is unchanged.
    await rig.write(attributes={"plan": "platinum", "tier": "2"})
    assert (await rig.step())[0] == "unchanged"
    assert len(rig.imports()) == 2


async def test_resend_in_the_request_sends_every_property(store: Store) -> None:
    rig = Rig(store)
    await rig.write()
    await rig.step()
    await rig.write(resend=True)
    assert (await rig.step())[0] == "accepted"
    assert rig.imports() == [{"plan": "gold", "tier": "2"}] * 2


async def test_resend_in_the_mapping_sends_every_property(store: Store) -> None:
    rig = Rig(store, OcambaMapping(resend=True))
    await rig.write()
    await rig.step()
    await rig.write(attributes={"plan": "platinum", "tier": "2"})
    await rig.step()
    await rig.write(attributes={"plan": "platinum", "tier": "2"})
    assert (await rig.step())[0] == "accepted"
    assert rig.imports() == [
        {"plan": "gold", "tier": "2"},
        {"plan": "platinum", "tier": "2"},
        {"plan": "platinum", "tier": "2"},
    ]


async def test_a_failed_delivery_does_not_count_as_ocamba_having_it(store: Store) -> None:
    rig = Rig(store)
    await rig.write()
    await rig.step()
    rig.ocamba.bad_ids.add("9001")  # Ocamba answers 400 to imports of this profile
    await rig.write(attributes={"plan": "platinum", "tier": "2"})
    assert (await rig.step())[0] == "failed"
    rig.ocamba.bad_ids.clear()
    await rig.write(attributes={"plan": "platinum", "tier": "2"})
    assert (await rig.step())[0] == "accepted"
    assert rig.imports()[-1] == {"plan": "platinum"}


async def test_a_known_profiles_email_only_change_is_unsupported(store: Store) -> None:
    rig = Rig(store)
    await rig.write()
    await rig.step()
    await rig.write(email="new@example.com")
    state, error = await rig.step()
    assert state == "unsupported"
    assert error is not None and error.startswith(CANNOT_UPDATE) and "email" in error
    assert rig.ocamba.paths() == [CREATE_PATH, IMPORT_PATH]
    assert rig.count("unsupported") == 1
    # Ocamba still has the old email: the same write stays unsupported, never unchanged.
    await rig.write(email="new@example.com")
    assert (await rig.step())[0] == "unsupported"
    # With a property changed too, the property goes; the email is still not Ocamba's.
    await rig.write(email="new@example.com", attributes={"plan": "x", "tier": "2"})
    assert (await rig.step())[0] == "accepted"
    assert rig.imports()[-1] == {"plan": "x"}
    await rig.write(email="new@example.com", attributes={"plan": "x", "tier": "2"})
    assert (await rig.step())[0] == "unsupported"


async def test_keyed_digests_reveal_nothing(keyed_store: Store, store_url: str) -> None:
    rig = Rig(keyed_store)
    await rig.write()
    await rig.step()
    stored = await stored_digests(store_url)
    assert set(stored) == {
        "email",
        "full_name",
        "custom_properties.plan",
        "custom_properties.tier",
    }
    text = json.dumps(stored)
    for plain in ("jane@example.com", "Jane Doe", "gold"):
        assert plain not in text
    person = Item(1, msgspec.convert(PERSON, NormalizedProfile))
    unkeyed = changes.digests(Sealer(), "ocamba", rig.adapter.fields(person))
    assert set(unkeyed) == set(stored)
    for name, digest in stored.items():
        assert digest != unkeyed[name]
        assert unkeyed[name].removeprefix("sha256:") not in digest
        assert not digest.startswith("sha256:")
    # Compared under the same key: the second write is unchanged.
    await rig.write()
    assert (await rig.step())[0] == "unchanged"


@pytest.mark.parametrize("backend", ["omneo", "import_batch"])
async def test_omneo_and_import_batch_skip_an_unchanged_write_and_send_a_changed_one_whole(
    store: Store, backend: Backend
) -> None:
    rig = Rig(store, backend=backend)
    await rig.write()
    assert (await rig.step())[0] in ("accepted", "confirmed")
    await rig.write()
    assert (await rig.step())[0] == "unchanged"
    assert len(rig.fake.requests) == 1
    await rig.write(attributes={"plan": "platinum", "tier": "2"})
    assert (await rig.step())[0] in ("accepted", "confirmed")
    first, last = rig.fake.bodies()[0], rig.fake.bodies()[-1]
    entries = "profiles" if backend == "omneo" else "data"
    # The whole mapped profile again: neither doc says a field left out is kept.
    assert set(last[entries][0]) == set(first[entries][0])
    assert last[entries][0] != first[entries][0]


async def test_a_batch_emptied_by_change_detection_is_filled_from_the_queue(store: Store) -> None:
    """A re-sync with a few changes: one call carries them, not one per batch."""
    clock = FakeClock(START)
    store.clock = clock
    settings = Settings(
        import_batch_url="http://import-batch.test",
        import_batch_batch_size=10,
        batch_linger=0.0,
        workers_per_backend=1,
        realtime_workers=0,
    )
    fake = FakeBackend(ok_for_each)
    adapter = ImportBatchAdapter(settings, sender("import_batch", fake.client()))
    d = Dispatcher(store, {"import_batch": adapter}, settings, Metrics(), clock=clock)

    async def post(changed: set[int]) -> None:
        profiles = [
            NormalizedProfile(
                external_id=f"p{i}",
                email=f"p{i}@example.com",
                first_name="B" if i in changed else "A",
            )
            for i in range(50)
        ]
        request = NewRequest(f"r-{next(_ids)}", "crm", ["import_batch"], profiles, clock.now())
        await store.accept(request)

    await post(set())
    while await d._step("import_batch", adapter) == 0:
        pass
    assert len(fake.requests) == 5  # 50 new people, 10 a call
    await post({5, 25, 45})  # one change in each of three batches' worth
    while await d._step("import_batch", adapter) == 0:
        pass
    [call] = fake.requests[5:]
    sent = msgspec.json.decode(call.content)["data"]
    assert sorted(p["email"] for p in sent) == [
        "p25@example.com",
        "p45@example.com",
        "p5@example.com",
    ]
    assert await store.count_state("import_batch", "unchanged") == 47
