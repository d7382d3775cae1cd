"""The dispatcher against a real SQLite store and scripted adapters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import pytest

from gateway.backends.base import Item, NotSent, Outcome, TransientError
from gateway.config import Settings
from gateway.dispatch.breaker import CircuitState
from gateway.dispatch.dispatcher import Dispatcher
from gateway.metrics import Metrics
from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import DeliveryResult, NewRequest, Store
from gateway.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


class ScriptedAdapter:
    """Records what it is handed; `behaviour` decides each call's fate."""

    name: Backend = "omneo"
    batch_size = 50

    def __init__(self, behaviour: str = "ok") -> None:
        self.behaviour = behaviour
        self.calls: list[list[str]] = []
        self.hang = asyncio.Event()
        self.called = asyncio.Event()

    async def calls_reach(self, n: int) -> None:
        while len(self.calls) < n:
            self.called.clear()
            await asyncio.wait_for(self.called.wait(), 5)

    async def deliver(self, items: Sequence[Item]) -> list[Outcome]:
        self.calls.append([i.profile.external_id for i in items])
        self.called.set()
        if self.behaviour == "hang":
            await self.hang.wait()
        if self.behaviour == "slow":
            await asyncio.sleep(0.3)
        if self.behaviour == "bug":
            raise ZeroDivisionError("adapter bug")
        if self.behaviour == "not_sent":
            raise NotSent("pacing would wait too long", retry_after=0.01)
        if self.behaviour == "down":
            raise TransientError("omneo batch: cannot connect", unavailable=True)
        if self.behaviour == "throttled":
            raise TransientError("omneo batch: HTTP 429", status=429, retry_after=0.01)
        if self.behaviour == "poison" and any(i.profile.external_id == "poison" for i in items):
            raise TransientError("omneo batch: HTTP 500", status=500, unavailable=True)
        if self.behaviour == "forget":
            return []
        return [
            Outcome(i.delivery_id, "confirmed", backend_id=f"id-{i.delivery_id}") for i in items
        ]


def settings(**overrides: object) -> Settings:
    base = {"retry_base": 0.01, "retry_cap": 0.02, "batch_linger": 0.0, "workers_per_backend": 1}
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


async def write(store: SQLiteStore, *ids: str, targets: Sequence[Backend] = ("omneo",)) -> None:
    await store.accept(
        NewRequest(
            request_id=f"r-{time.monotonic_ns()}",
            app="t",
            targets=list(targets),
            profiles=[NormalizedProfile(external_id=i) for i in ids],
            received_at=time.time(),
        )
    )


async def state_of(
    store: SQLiteStore, external_id: str, backend: Backend = "omneo"
) -> tuple[str, int]:
    view = await store.get_profile(external_id)
    assert view is not None
    d = view.backends[backend]
    return d.state, d.attempts


async def until(
    store: SQLiteStore,
    external_id: str,
    state: str,
    within: float = 5,
    backend: Backend = "omneo",
) -> int:
    deadline = time.monotonic() + within
    while True:
        current, attempts = await state_of(store, external_id, backend)
        if current == state:
            return attempts
        if time.monotonic() > deadline:
            raise AssertionError(f"{external_id} is {current}, not {state}")
        await asyncio.sleep(0.01)


async def run(dispatcher: Dispatcher) -> Dispatcher:
    await dispatcher.start()
    return dispatcher


class Amnesiac:
    """The store as a process that dies mid-send sees it: nothing it would
    record afterwards (not even the release on stop) reaches the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def record(self, owner: str, results: list[DeliveryResult]) -> int:
        return 0


async def test_a_crash_mid_send_is_sent_again_after_the_lease(store: SQLiteStore) -> None:
    await write(store, "a")
    stuck = ScriptedAdapter("hang")
    dying = cast(Store, Amnesiac(store))
    first = await run(
        Dispatcher(
            dying, {"omneo": stuck}, settings(lease_seconds=0.3, shutdown_grace=0.05), Metrics()
        )
    )
    await stuck.calls_reach(1)
    await first.stop()  # the process "dies" holding the lease; nothing recorded
    assert await state_of(store, "a") == ("in_flight", 1)

    healthy = ScriptedAdapter()
    second = await run(Dispatcher(store, {"omneo": healthy}, settings(), Metrics()))
    try:
        assert await until(store, "a", "confirmed") == 2
        assert healthy.calls == [["a"]]
    finally:
        await second.stop()


async def test_an_adapter_bug_retries_and_finally_ends_dead(store: SQLiteStore) -> None:
    await write(store, "a")
    metrics = Metrics()
    d = await run(
        Dispatcher(store, {"omneo": ScriptedAdapter("bug")}, settings(max_attempts=3), metrics)
    )
    try:
        assert await until(store, "a", "dead") == 3
        [dead] = await store.list_deliveries(["dead"])
        assert dead.last_error is not None
        assert (
            "gave up after 3 attempts" in dead.last_error and "ZeroDivisionError" in dead.last_error
        )
    finally:
        await d.stop()
    assert metrics.deliveries.labels("omneo", "dead")._value.get() == 1
    assert metrics.retries.labels("omneo")._value.get() == 2


async def test_a_missing_outcome_is_retried_not_lost(store: SQLiteStore) -> None:
    await write(store, "a")
    d = await run(
        Dispatcher(store, {"omneo": ScriptedAdapter("forget")}, settings(max_attempts=2), Metrics())
    )
    try:
        await until(store, "a", "dead")
        [dead] = await store.list_deliveries(["dead"])
        assert "no outcome" in (dead.last_error or "")
    finally:
        await d.stop()


async def test_items_handed_back_unsent_do_not_use_up_attempts(store: SQLiteStore) -> None:
    await write(store, "a")
    adapter = ScriptedAdapter("not_sent")
    d = await run(Dispatcher(store, {"omneo": adapter}, settings(max_attempts=2), Metrics()))
    try:
        await adapter.calls_reach(6)  # far more tries than max_attempts
        state, attempts = await state_of(store, "a")
        assert state in ("retrying", "in_flight") and attempts <= 1
        adapter.behaviour = "ok"
        assert await until(store, "a", "confirmed") == 1
    finally:
        await d.stop()


async def test_a_burst_travels_as_one_batch_after_the_linger(store: SQLiteStore) -> None:
    adapter = ScriptedAdapter()
    d = await run(Dispatcher(store, {"omneo": adapter}, settings(batch_linger=0.3), Metrics()))
    try:
        await write(store, "a")
        d.notify(["omneo"])
        await asyncio.sleep(0.05)
        await write(store, "b", "c")
        d.notify(["omneo"])
        await until(store, "c", "confirmed")
        assert adapter.calls == [["a", "b", "c"]]
    finally:
        await d.stop()


async def test_outcomes_and_backend_ids_are_recorded(store: SQLiteStore) -> None:
    await write(store, "a", "b")
    metrics = Metrics()
    d = await run(Dispatcher(store, {"omneo": ScriptedAdapter()}, settings(), metrics))
    try:
        await until(store, "b", "confirmed")
    finally:
        await d.stop()
    view = await store.get_profile("a")
    assert view is not None and view.backend_ids["omneo"].startswith("id-")
    assert metrics.deliveries.labels("omneo", "confirmed")._value.get() == 2
    assert metrics.batch_size.labels("omneo")._sum.get() == 2


class SentAt(ScriptedAdapter):
    """Accepts everything, stamped as sent at a fixed time (the Omneo adapter's way)."""

    async def deliver(self, items: Sequence[Item]) -> list[Outcome]:
        return [Outcome(i.delivery_id, "accepted", sent_at=1234.5) for i in items]


class Recorded(Amnesiac):
    """The store, keeping a copy of every result the dispatcher records."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.results: list[DeliveryResult] = []

    async def record(self, owner: str, results: list[DeliveryResult]) -> int:
        self.results += results
        return await self._store.record(owner, results)


async def test_an_accepted_result_keeps_the_time_its_call_was_sent(store: SQLiteStore) -> None:
    await write(store, "a")
    recorded = Recorded(store)
    d = await run(Dispatcher(cast(Store, recorded), {"omneo": SentAt()}, settings(), Metrics()))
    try:
        await until(store, "a", "accepted")
    finally:
        await d.stop()
    assert [(r.state, r.sent_at) for r in recorded.results] == [("accepted", 1234.5)]


async def test_stop_lets_a_batch_under_way_finish(store: SQLiteStore) -> None:
    await write(store, "a")
    adapter = ScriptedAdapter("slow")
    d = await run(Dispatcher(store, {"omneo": adapter}, settings(), Metrics()))
    await adapter.calls_reach(1)
    await d.stop()
    assert await state_of(store, "a") == ("confirmed", 1)


async def test_stop_sends_a_lingering_batch_at_once(store: SQLiteStore) -> None:
    adapter = ScriptedAdapter()
    d = await run(Dispatcher(store, {"omneo": adapter}, settings(batch_linger=30), Metrics()))
    await write(store, "a")
    d.notify(["omneo"])
    await until(store, "a", "in_flight")  # claimed, now lingering for company
    started = time.monotonic()
    await d.stop()
    assert time.monotonic() - started < 5
    assert await state_of(store, "a") == ("confirmed", 1)


async def test_stop_releases_a_send_that_outlasts_the_grace(store: SQLiteStore) -> None:
    await write(store, "a", "b")
    adapter = ScriptedAdapter("hang")
    config = settings(shutdown_grace=0.2, lease_seconds=60)
    metrics = Metrics()
    d = await run(Dispatcher(store, {"omneo": adapter}, config, metrics))
    await adapter.calls_reach(1)
    started = time.monotonic()
    await d.stop()
    assert time.monotonic() - started < 2  # the grace, then a prompt release
    # Released at once, not left to its 60 s lease; the attempt counts, as the
    # backend may have taken the batch before the cut.
    assert await state_of(store, "a") == ("retrying", 1)
    assert await state_of(store, "b") == ("retrying", 1)
    assert metrics.deliveries.labels("omneo", "retry")._value.get() == 2

    healthy = ScriptedAdapter()
    started = time.monotonic()
    second = await run(Dispatcher(store, {"omneo": healthy}, settings(), Metrics()))
    try:
        assert await until(store, "b", "confirmed") == 2
        assert time.monotonic() - started < 5  # long before the old lease would end
        assert healthy.calls == [["a", "b"]]
    finally:
        await second.stop()


# -- the circuit breaker ------------------------------------------------------


def circuit(d: Dispatcher, backend: Backend = "omneo") -> CircuitState:
    return d.breakers[backend].state


async def eventually(check: Callable[[], bool], within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_an_open_circuit_claims_nothing_and_spends_no_attempts(store: SQLiteStore) -> None:
    await write(store, "a")
    adapter = ScriptedAdapter("down")
    metrics = Metrics()
    config = settings(breaker_failures=3, breaker_cooldown=60, max_attempts=3)
    d = await run(Dispatcher(store, {"omneo": adapter}, config, metrics))
    try:
        await eventually(lambda: circuit(d) is CircuitState.OPEN)
        calls = len(adapter.calls)
        assert calls == 3
        await write(store, "b")
        d.notify(["omneo"])
        await asyncio.sleep(0.5)  # dozens of retry delays and polls
        assert len(adapter.calls) == calls  # neither the retry nor the new write went out
        # Two failures counted; the one that tripped the breaker did not, so
        # the third attempt is still there and nothing went dead.
        assert await state_of(store, "a") == ("retrying", 2)
        assert await state_of(store, "b") == ("pending", 0)
        assert metrics.circuit_state.labels("omneo")._value.get() == 2
        assert metrics.circuit_transitions.labels("omneo", "open")._value.get() == 1
    finally:
        await d.stop()


async def test_failed_probes_spend_no_attempts_and_a_good_one_drains_the_queue(
    store: SQLiteStore,
) -> None:
    await write(store, "a")
    adapter = ScriptedAdapter("down")
    metrics = Metrics()
    config = settings(
        breaker_failures=1, breaker_cooldown=0.05, breaker_max_cooldown=0.05, max_attempts=2
    )
    d = await run(Dispatcher(store, {"omneo": adapter}, config, metrics))
    try:
        await adapter.calls_reach(8)  # the trip, then probes: far more than max_attempts
        assert metrics.circuit_transitions.labels("omneo", "half_open")._value.get() >= 7
        state, attempts = await state_of(store, "a")
        assert state in ("retrying", "in_flight") and attempts <= 1
        adapter.behaviour = "ok"
        await write(store, "b")
        await until(store, "b", "confirmed")
        # "a" was held past the probe (see the poison test), then goes too.
        assert await until(store, "a", "confirmed") == 1
        assert circuit(d) is CircuitState.CLOSED
        assert metrics.circuit_state.labels("omneo")._value.get() == 0
        assert metrics.circuit_transitions.labels("omneo", "closed")._value.get() == 1
        assert await store.list_deliveries(["dead"]) == []
    finally:
        await d.stop()


async def test_a_poison_batch_is_not_every_probe(store: SQLiteStore) -> None:
    # A backend that 5xxs on one profile looks down to the breaker. The refunded
    # batch is held past the next probe, so the probe carries other deliveries,
    # succeeds, and closes the circuit instead of retrying the poison forever.
    await write(store, "poison")
    adapter = ScriptedAdapter("poison")
    config = settings(breaker_failures=1, breaker_cooldown=0.2, breaker_max_cooldown=0.2)
    d = await run(Dispatcher(store, {"omneo": adapter}, config, Metrics()))
    try:
        await eventually(lambda: circuit(d) is CircuitState.OPEN)
        await write(store, "good")
        d.notify(["omneo"])
        await until(store, "good", "confirmed")
        assert ["good"] in adapter.calls  # the probe went without the poison
        assert (await state_of(store, "poison"))[0] in ("retrying", "in_flight")
    finally:
        await d.stop()


async def test_other_backends_keep_flowing_while_one_circuit_is_open(store: SQLiteStore) -> None:
    down, up = ScriptedAdapter("down"), ScriptedAdapter()
    config = settings(breaker_failures=2, breaker_cooldown=60)
    d = await run(Dispatcher(store, {"omneo": down, "import_batch": up}, config, Metrics()))
    try:
        await write(store, "a", targets=["omneo", "import_batch"])
        d.notify(["omneo", "import_batch"])
        await eventually(lambda: circuit(d, "omneo") is CircuitState.OPEN)
        calls = len(down.calls)
        for n in range(5):
            await write(store, f"b{n}", targets=["omneo", "import_batch"])
            d.notify(["omneo", "import_batch"])
            await until(store, f"b{n}", "confirmed", backend="import_batch")
        assert circuit(d, "import_batch") is CircuitState.CLOSED
        assert len(down.calls) == calls
        assert await state_of(store, "b4") == ("pending", 0)
    finally:
        await d.stop()


async def test_a_rate_limited_backend_does_not_open_the_circuit(store: SQLiteStore) -> None:
    await write(store, "a")
    adapter = ScriptedAdapter("throttled")
    config = settings(breaker_failures=2, max_attempts=50)
    d = await run(Dispatcher(store, {"omneo": adapter}, config, Metrics()))
    try:
        await adapter.calls_reach(6)
        assert circuit(d) is CircuitState.CLOSED
        adapter.behaviour = "ok"
        await until(store, "a", "confirmed")
    finally:
        await d.stop()


class FollowerStore(SQLiteStore):
    """A replica that another replica beats to the leadership of Ocamba."""

    async def lead(self, backend: Backend) -> bool:
        return backend != "ocamba"


async def test_only_the_leader_sends_to_a_rate_limited_backend(tmp_path: Path) -> None:
    follower = FollowerStore(tmp_path / "f.db")
    await follower.open()
    try:
        await follower.accept(
            NewRequest(
                request_id="r",
                app="t",
                targets=["ocamba", "omneo"],
                profiles=[NormalizedProfile(external_id="a")],
                received_at=time.time(),
            )
        )
        ocamba, omneo = ScriptedAdapter(), ScriptedAdapter()
        config = settings(ocamba_url="http://o", omneo_url="http://m")
        d = await run(Dispatcher(follower, {"ocamba": ocamba, "omneo": omneo}, config, Metrics()))
        try:
            await omneo.calls_reach(1)  # not rate limited: every replica sends
            await asyncio.sleep(0.2)
            assert ocamba.calls == []  # rate limited: only the leader sends
            view = await follower.get_profile("a")
            assert view is not None and view.backends["ocamba"].state == "pending"
        finally:
            await d.stop()
    finally:
        await follower.close()


def test_which_backends_are_rate_limited() -> None:
    urls = {"ocamba_url": "http://o", "omneo_url": "http://m", "import_batch_url": "http://i"}
    assert Settings(**urls).rate_limited_backends() == ["ocamba"]  # type: ignore[arg-type]
    limited = Settings(**urls, import_batch_rate_per_minute=600)  # type: ignore[arg-type]
    assert limited.rate_limited_backends() == ["ocamba", "import_batch"]


class TakeoverStore(SQLiteStore):
    """A replica that follows at first, then takes over (the leader died)."""

    leader_alive = True

    async def lead(self, backend: Backend) -> bool:
        return backend != "ocamba" or not self.leader_alive


async def test_a_takeover_waits_for_the_next_rate_window(tmp_path: Path) -> None:
    store = TakeoverStore(tmp_path / "t.db")
    await store.open()
    try:
        await store.accept(
            NewRequest(
                request_id="r",
                app="t",
                targets=["ocamba"],
                profiles=[NormalizedProfile(external_id="a")],
                received_at=time.time(),
            )
        )
        ocamba = ScriptedAdapter()
        config = settings(ocamba_url="http://o", ocamba_minute_window=2.0)
        d = await run(Dispatcher(store, {"ocamba": ocamba}, config, Metrics()))
        try:
            await asyncio.sleep(0.2)  # seen as a follower
            store.leader_alive = False
            took_over = time.time()
            await ocamba.calls_reach(1)
            sent = time.time()
            # Not before the 2 s window the dead leader was counting in has ended.
            assert sent >= took_over - took_over % 2.0 + 2.0 - 0.05
        finally:
            await d.stop()
    finally:
        await store.close()
