"""The dispatcher against a real store and scripted adapters, on a clock the
tests step: retry delays, leases, breaker cool-downs, the batch linger and the
leader's takeover wait pass when a test advances the FakeClock, never by sleeping.

The store reads the same clock (its modules' `time.time` is patched here), so a
delivery's due time and lease run on it too. `drive` steps the clock from one
wake-up to the next, with every worker at rest in between.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import cast

import pytest

from gateway.backends.base import Item, NotSent, Outcome, TransientError
from gateway.clock import FakeClock
from gateway.config import Settings
from gateway.dispatch.breaker import CircuitState
from gateway.dispatch.dispatcher import Dispatcher
from gateway.dispatch.leadership import LEADER_RETRY
from gateway.metrics import Metrics
from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import DeliveryResult, NewRequest, Store
from gateway.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

START = 1_000_000.0  # the clock's start: a whole number of 2 s rate windows
BOUND = 5.0  # real seconds a test may wait for the dispatcher before it fails
_ids = itertools.count()


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> FakeClock:
    """The test's clock, also the one the store stamps and compares times with
    (the store takes a clock as the dispatcher does)."""
    clock = FakeClock(START)
    if "store" in request.fixturenames:
        store: Store = request.getfixturevalue("store")
        store.clock = clock
    return clock


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
    base = {
        "retry_base": 0.01,
        "retry_cap": 0.02,
        "batch_linger": 0.0,
        "ocamba_settle": 0.0,
        "workers_per_backend": 1,
        # One worker in all, unless a test asks for more.
        "realtime_workers": 0,
    }
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


async def write(store: SQLiteStore, *ids: str, targets: Sequence[Backend] = ("omneo",)) -> None:
    await store.accept(
        NewRequest(
            request_id=f"r-{next(_ids)}",
            app="t",
            targets=list(targets),
            profiles=[NormalizedProfile(external_id=i) for i in ids],
            received_at=START,
        )
    )


async def state_of(
    store: SQLiteStore, external_id: str, backend: Backend = "omneo"
) -> tuple[str, int]:
    view = await store.get_profile(external_id)
    assert view is not None
    d = view.backends[backend]
    return d.state, d.attempts


async def settle(d: Dispatcher) -> None:
    """Wait until every worker rests between steps, its rest not yet over."""
    await asyncio.wait_for(d.idle(), BOUND)


async def drive(
    d: Dispatcher, clock: FakeClock, check: Callable[[], Awaitable[bool]], steps: int = 500
) -> None:
    """Step the clock from one worker's wake-up to the next until `check` holds."""
    for _ in range(steps):
        await settle(d)
        if await check():
            return
        due = clock.next_deadline()
        assert due is not None, "every worker waits, and for nothing"
        clock.advance(due - clock.now())
    raise AssertionError(f"not met within {steps} wake-ups, at {clock.now() - START:.2f} s")


def calls_reach(adapter: ScriptedAdapter, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(adapter.calls) >= n

    return check


async def until(
    store: SQLiteStore,
    external_id: str,
    state: str,
    d: Dispatcher,
    clock: FakeClock,
    backend: Backend = "omneo",
) -> int:
    """Drive the clock until the delivery is in `state`; returns its attempts."""

    async def there() -> bool:
        return (await state_of(store, external_id, backend))[0] == state

    await drive(d, clock, there)
    return (await state_of(store, external_id, backend))[1]


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


async def test_a_crash_mid_send_is_sent_again_after_the_lease(
    store: SQLiteStore, clock: FakeClock
) -> None:
    await write(store, "a")
    stuck = ScriptedAdapter("hang")
    dying = cast(Store, Amnesiac(store))
    config = settings(lease_seconds=30, shutdown_grace=0.05)
    first = await run(Dispatcher(dying, {"omneo": stuck}, config, Metrics(), clock=clock))
    await stuck.calls_reach(1)
    await first.stop()  # the process "dies" holding the lease; nothing recorded
    assert await state_of(store, "a") == ("in_flight", 1)

    healthy = ScriptedAdapter()
    second = await run(Dispatcher(store, {"omneo": healthy}, settings(), Metrics(), clock=clock))
    try:
        clock.advance(29.9)
        second.notify(["omneo"])
        await settle(second)
        assert healthy.calls == []  # the lease still holds it
        clock.advance(0.2)
        second.notify(["omneo"])
        await settle(second)
        assert await state_of(store, "a") == ("confirmed", 2)
        assert healthy.calls == [["a"]]
    finally:
        await second.stop()


async def test_an_adapter_bug_retries_and_finally_ends_dead(
    store: SQLiteStore, clock: FakeClock
) -> None:
    await write(store, "a")
    metrics = Metrics()
    adapter = ScriptedAdapter("bug")
    config = settings(max_attempts=3, retry_base=10, retry_cap=10)
    rng = random.Random(7)
    delay = random.Random(7).uniform(0.0, 10.0)  # the first retry's delay: full jitter
    d = await run(Dispatcher(store, {"omneo": adapter}, config, metrics, rng=rng, clock=clock))
    try:
        await settle(d)
        assert len(adapter.calls) == 1
        assert await state_of(store, "a") == ("retrying", 1)
        clock.advance(delay - 0.01)
        d.notify(["omneo"])
        await settle(d)
        assert len(adapter.calls) == 1  # not due yet
        clock.advance(0.01)
        d.notify(["omneo"])
        await settle(d)
        assert len(adapter.calls) == 2  # due: tried again at once
        assert await until(store, "a", "dead", d, clock) == 3
        [dead] = await store.list_deliveries(["dead"])
        assert dead.last_error is not None
        assert (
            "gave up after 3 attempts" in dead.last_error and "ZeroDivisionError" in dead.last_error
        )
    finally:
        await d.stop()
    assert metrics.deliveries.labels("omneo", "dead")._value.get() == 1
    assert metrics.retries.labels("omneo")._value.get() == 2


async def test_a_missing_outcome_is_retried_not_lost(store: SQLiteStore, clock: FakeClock) -> None:
    await write(store, "a")
    adapter = ScriptedAdapter("forget")
    d = await run(
        Dispatcher(store, {"omneo": adapter}, settings(max_attempts=2), Metrics(), clock=clock)
    )
    try:
        await until(store, "a", "dead", d, clock)
        [dead] = await store.list_deliveries(["dead"])
        assert "no outcome" in (dead.last_error or "")
        assert len(adapter.calls) == 2
    finally:
        await d.stop()


async def test_items_handed_back_unsent_do_not_use_up_attempts(
    store: SQLiteStore, clock: FakeClock
) -> None:
    await write(store, "a")
    adapter = ScriptedAdapter("not_sent")
    d = await run(
        Dispatcher(store, {"omneo": adapter}, settings(max_attempts=2), Metrics(), clock=clock)
    )
    try:
        await drive(d, clock, calls_reach(adapter, 6))  # far more tries than max_attempts
        assert await state_of(store, "a") == ("retrying", 0)
        adapter.behaviour = "ok"
        assert await until(store, "a", "confirmed", d, clock) == 1
    finally:
        await d.stop()


async def test_a_burst_travels_as_one_batch_after_the_linger(
    store: SQLiteStore, clock: FakeClock
) -> None:
    adapter = ScriptedAdapter()
    config = settings(batch_linger=0.5)  # times in binary fractions: exact sums
    d = await run(Dispatcher(store, {"omneo": adapter}, config, Metrics(), clock=clock))
    try:
        await settle(d)
        await write(store, "a")
        d.notify(["omneo"])
        await asyncio.wait_for(clock.blocked(1), BOUND)  # "a" claimed, lingering for company
        assert await state_of(store, "a") == ("in_flight", 1)
        assert clock.next_deadline() == START + 0.5
        clock.advance(0.25)
        await write(store, "b", "c")
        d.notify(["omneo"])
        clock.advance(0.125)
        await asyncio.wait_for(clock.blocked(1), BOUND)
        assert adapter.calls == []  # still lingering
        clock.advance(0.125)
        await settle(d)
        assert adapter.calls == [["a", "b", "c"]]
        assert await state_of(store, "c") == ("confirmed", 1)
    finally:
        await d.stop()


async def test_outcomes_and_backend_ids_are_recorded(store: SQLiteStore, clock: FakeClock) -> None:
    await write(store, "a", "b")
    metrics = Metrics()
    d = await run(Dispatcher(store, {"omneo": ScriptedAdapter()}, settings(), metrics, clock=clock))
    try:
        await settle(d)
        assert await state_of(store, "b") == ("confirmed", 1)
    finally:
        await d.stop()
    view = await store.get_profile("a")
    assert view is not None and view.backend_ids["omneo"].startswith("id-")
    assert metrics.deliveries.labels("omneo", "confirmed")._value.get() == 2
    assert metrics.batch_size.labels("omneo")._sum.get() == 2


async def test_queued_writes_of_one_person_go_as_one_and_count_as_merged(
    store: SQLiteStore, clock: FakeClock
) -> None:
    await write(store, "a", "b")
    await write(store, "a")
    await write(store, "a")
    metrics = Metrics()
    adapter = ScriptedAdapter()
    d = await run(Dispatcher(store, {"omneo": adapter}, settings(), metrics, clock=clock))
    try:
        await settle(d)
    finally:
        await d.stop()
    assert adapter.calls == [["a", "b"]]  # a's three writes in one item
    assert metrics.deliveries.labels("omneo", "confirmed")._value.get() == 2
    assert metrics.deliveries.labels("omneo", "merged")._value.get() == 2
    view = await store.get_profile("a")
    assert view is not None
    latest = view.backends["omneo"]
    assert (latest.state, latest.carrier_state) == ("merged", "confirmed")


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


async def test_an_accepted_result_keeps_the_time_its_call_was_sent(
    store: SQLiteStore, clock: FakeClock
) -> None:
    await write(store, "a")
    recorded = Recorded(store)
    d = await run(
        Dispatcher(cast(Store, recorded), {"omneo": SentAt()}, settings(), Metrics(), clock=clock)
    )
    try:
        await settle(d)
        assert (await state_of(store, "a"))[0] == "accepted"
    finally:
        await d.stop()
    assert [(r.state, r.sent_at) for r in recorded.results] == [("accepted", 1234.5)]


async def test_stop_lets_a_batch_under_way_finish(store: SQLiteStore, clock: FakeClock) -> None:
    await write(store, "a")
    adapter = ScriptedAdapter("hang")
    d = await run(Dispatcher(store, {"omneo": adapter}, settings(), Metrics(), clock=clock))
    await adapter.calls_reach(1)
    stopping = asyncio.create_task(d.stop())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not stopping.done()  # waiting for the batch, not cutting it short
    adapter.hang.set()  # the backend answers
    await asyncio.wait_for(stopping, BOUND)
    assert await state_of(store, "a") == ("confirmed", 1)


async def test_stop_sends_a_lingering_batch_at_once(store: SQLiteStore, clock: FakeClock) -> None:
    adapter = ScriptedAdapter()
    config = settings(batch_linger=30)
    d = await run(Dispatcher(store, {"omneo": adapter}, config, Metrics(), clock=clock))
    await settle(d)
    await write(store, "a")
    d.notify(["omneo"])
    await asyncio.wait_for(clock.blocked(1), BOUND)  # claimed, now lingering for company
    assert await state_of(store, "a") == ("in_flight", 1)
    await asyncio.wait_for(d.stop(), BOUND)  # well within the 10 s grace: no cut
    assert clock.now() == START  # the linger was cut short, not waited out
    assert adapter.calls == [["a"]]
    assert await state_of(store, "a") == ("confirmed", 1)


async def test_stop_releases_a_send_that_outlasts_the_grace(
    store: SQLiteStore, clock: FakeClock
) -> None:
    await write(store, "a", "b")
    adapter = ScriptedAdapter("hang")
    config = settings(shutdown_grace=0.2, lease_seconds=60)
    metrics = Metrics()
    d = await run(Dispatcher(store, {"omneo": adapter}, config, metrics, clock=clock))
    await adapter.calls_reach(1)
    started = time.monotonic()
    await d.stop()
    assert time.monotonic() - started < 2  # the grace (real time), then a prompt release
    # Released at once, not left to its 60 s lease; the attempt counts, as the
    # backend may have taken the batch before the cut.
    assert await state_of(store, "a") == ("retrying", 1)
    assert await state_of(store, "b") == ("retrying", 1)
    assert metrics.deliveries.labels("omneo", "retry")._value.get() == 2

    healthy = ScriptedAdapter()
    second = await run(Dispatcher(store, {"omneo": healthy}, settings(), Metrics(), clock=clock))
    try:
        await settle(second)
        assert await state_of(store, "b") == ("confirmed", 2)
        assert clock.now() == START  # due at once: no lease, no backoff waited out
        assert healthy.calls == [["a", "b"]]
    finally:
        await second.stop()


# -- the circuit breaker ------------------------------------------------------


def circuit(d: Dispatcher, backend: Backend = "omneo") -> CircuitState:
    return d.breakers[backend].state


def circuit_is(d: Dispatcher, state: CircuitState) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return circuit(d) is state

    return check


async def test_an_open_circuit_claims_nothing_and_spends_no_attempts(
    store: SQLiteStore, clock: FakeClock
) -> None:
    await write(store, "a")
    adapter = ScriptedAdapter("down")
    metrics = Metrics()
    config = settings(breaker_failures=3, breaker_cooldown=60, max_attempts=3)
    d = await run(Dispatcher(store, {"omneo": adapter}, config, metrics, clock=clock))
    try:
        await drive(d, clock, circuit_is(d, CircuitState.OPEN))
        calls = len(adapter.calls)
        assert calls == 3
        await write(store, "b")
        d.notify(["omneo"])
        probe_in = d.breakers["omneo"].wait_time()
        assert probe_in is not None and probe_in >= 30  # between half and all of 60 s
        for _ in range(int(probe_in) - 1):  # every retry delay and poll up to the probe
            clock.advance(1.0)
            d.notify(["omneo"])
            await settle(d)
        assert len(adapter.calls) == calls  # neither the retry nor the new write went out
        # Two failures counted; the one that tripped the breaker did not, so
        # the third attempt is still there and nothing went dead.
        assert await state_of(store, "a") == ("retrying", 2)
        assert await state_of(store, "b") == ("pending", 0)
        assert metrics.circuit_state.labels("omneo")._value.get() == 2
        assert metrics.circuit_transitions.labels("omneo", "open")._value.get() == 1
        clock.advance(1.0)  # the probe's time
        await drive(d, clock, calls_reach(adapter, calls + 1))
        assert circuit(d) is CircuitState.OPEN  # the probe found it still down
    finally:
        await d.stop()


async def test_failed_probes_spend_no_attempts_and_a_good_one_drains_the_queue(
    store: SQLiteStore, clock: FakeClock
) -> None:
    await write(store, "a")
    adapter = ScriptedAdapter("down")
    metrics = Metrics()
    config = settings(
        breaker_failures=1, breaker_cooldown=0.05, breaker_max_cooldown=0.05, max_attempts=2
    )
    d = await run(Dispatcher(store, {"omneo": adapter}, config, metrics, clock=clock))
    try:
        await drive(d, clock, calls_reach(adapter, 8))  # the trip, then probes
        assert metrics.circuit_transitions.labels("omneo", "half_open")._value.get() == 7
        assert await state_of(store, "a") == ("retrying", 0)  # far more than max_attempts
        adapter.behaviour = "ok"
        await write(store, "b")
        assert await until(store, "b", "confirmed", d, clock) == 1
        # "a" was held past the probe (see the poison test), then goes too.
        assert await until(store, "a", "confirmed", d, clock) == 1
        assert circuit(d) is CircuitState.CLOSED
        assert metrics.circuit_state.labels("omneo")._value.get() == 0
        assert metrics.circuit_transitions.labels("omneo", "closed")._value.get() == 1
        assert await store.list_deliveries(["dead"]) == []
    finally:
        await d.stop()


async def test_a_poison_batch_is_not_every_probe(store: SQLiteStore, clock: FakeClock) -> None:
    # A backend that 5xxs on one profile looks down to the breaker. The refunded
    # batch is held past the next probe, so the probe carries other deliveries,
    # succeeds, and closes the circuit instead of retrying the poison forever.
    await write(store, "poison")
    adapter = ScriptedAdapter("poison")
    config = settings(breaker_failures=1, breaker_cooldown=0.2, breaker_max_cooldown=0.2)
    d = await run(Dispatcher(store, {"omneo": adapter}, config, Metrics(), clock=clock))
    try:
        await drive(d, clock, circuit_is(d, CircuitState.OPEN))
        await write(store, "good")
        d.notify(["omneo"])
        await until(store, "good", "confirmed", d, clock)
        assert adapter.calls == [["poison"], ["good"]]  # the probe went without the poison
        assert circuit(d) is CircuitState.CLOSED
        assert (await state_of(store, "poison"))[0] == "retrying"
    finally:
        await d.stop()


async def test_other_backends_keep_flowing_while_one_circuit_is_open(
    store: SQLiteStore, clock: FakeClock
) -> None:
    down, up = ScriptedAdapter("down"), ScriptedAdapter()
    config = settings(breaker_failures=2, breaker_cooldown=60)
    adapters: dict[Backend, ScriptedAdapter] = {"omneo": down, "import_batch": up}
    d = await run(Dispatcher(store, adapters, config, Metrics(), clock=clock))
    try:
        await write(store, "a", targets=["omneo", "import_batch"])
        d.notify(["omneo", "import_batch"])
        await drive(d, clock, circuit_is(d, CircuitState.OPEN))
        calls = len(down.calls)
        for n in range(5):
            await write(store, f"b{n}", targets=["omneo", "import_batch"])
            d.notify(["omneo", "import_batch"])
            clock.advance(1.0)  # well inside omneo's cool-down (30 s at least)
            await settle(d)
            assert await state_of(store, f"b{n}", "import_batch") == ("confirmed", 1)
        assert circuit(d, "import_batch") is CircuitState.CLOSED
        assert len(down.calls) == calls == 2
        assert await state_of(store, "b4") == ("pending", 0)
    finally:
        await d.stop()


async def test_a_rate_limited_backend_does_not_open_the_circuit(
    store: SQLiteStore, clock: FakeClock
) -> None:
    await write(store, "a")
    adapter = ScriptedAdapter("throttled")
    config = settings(breaker_failures=2, max_attempts=50)
    d = await run(Dispatcher(store, {"omneo": adapter}, config, Metrics(), clock=clock))
    try:
        await drive(d, clock, calls_reach(adapter, 6))
        assert circuit(d) is CircuitState.CLOSED
        adapter.behaviour = "ok"
        await until(store, "a", "confirmed", d, clock)
    finally:
        await d.stop()


class FollowerStore(SQLiteStore):
    """A replica that another replica beats to the leadership of Ocamba."""

    async def lead(self, backend: Backend) -> bool:
        return backend != "ocamba"


async def test_only_the_leader_sends_to_a_rate_limited_backend(
    tmp_path: Path, clock: FakeClock
) -> None:
    follower = FollowerStore(tmp_path / "f.db", clock=clock)
    await follower.open()
    try:
        await follower.accept(
            NewRequest(
                request_id="r",
                app="t",
                targets=["ocamba", "omneo"],
                profiles=[NormalizedProfile(external_id="a")],
                received_at=START,
            )
        )
        ocamba, omneo = ScriptedAdapter(), ScriptedAdapter()
        config = settings(ocamba_url="http://o", omneo_url="http://m")
        adapters: dict[Backend, ScriptedAdapter] = {"ocamba": ocamba, "omneo": omneo}
        d = await run(Dispatcher(follower, adapters, config, Metrics(), clock=clock))
        try:
            await settle(d)
            assert omneo.calls == [["a"]]  # not rate limited: every replica sends
            for _ in range(10):  # ten tries to become the sender, all lost
                clock.advance(LEADER_RETRY)
                await settle(d)
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


@pytest.mark.parametrize(
    ("offset", "sends_at"),
    [
        # Takes over at +1.0 s: the 2 s window ends 1.0 s later; send then.
        (0.0, 2.0),
        # Takes over at +1.5 s: 0.5 s is too close to the dead leader's last
        # requests (TAKEOVER_QUIET), so it waits out one more window.
        (0.5, 4.0),
    ],
)
async def test_a_takeover_waits_for_the_next_rate_window(
    tmp_path: Path, clock: FakeClock, offset: float, sends_at: float
) -> None:
    clock.advance(offset)
    store = TakeoverStore(tmp_path / "t.db", clock=clock)
    await store.open()
    try:
        await write(store, "a", targets=["ocamba"])
        ocamba = ScriptedAdapter()
        config = settings(ocamba_url="http://o", ocamba_minute_window=2.0)
        d = await run(Dispatcher(store, {"ocamba": ocamba}, config, Metrics(), clock=clock))
        try:
            await settle(d)  # seen as a follower
            store.leader_alive = False
            clock.advance(LEADER_RETRY)  # the next try wins: a takeover
            await asyncio.wait_for(clock.blocked(1), BOUND)
            due = clock.next_deadline()
            assert due is not None and due == pytest.approx(START + sends_at)
            clock.advance(due - clock.now() - 0.01)
            await asyncio.wait_for(clock.blocked(1), BOUND)
            assert ocamba.calls == []  # not before the dead leader's window has ended
            clock.advance(due - clock.now())
            await settle(d)
            assert ocamba.calls == [["a"]]
        finally:
            await d.stop()
    finally:
        await store.close()


async def test_every_worker_of_a_taken_over_backend_waits_for_the_next_window(
    tmp_path: Path, clock: FakeClock
) -> None:
    # The worker that sees the takeover waits; the others of the backend (the
    # real-time one here) find themselves leading a moment later and must wait
    # too, or they send in the window the dead leader may have filled.
    store = TakeoverStore(tmp_path / "t.db", clock=clock)
    await store.open()
    try:
        ocamba = ScriptedAdapter()
        # The defaults: one worker and one real-time worker per backend.
        config = settings(
            ocamba_url="http://o",
            ocamba_minute_window=2.0,
            workers_per_backend=1,
            realtime_workers=1,
        )
        metrics = Metrics()
        d = await run(Dispatcher(store, {"ocamba": ocamba}, config, metrics, clock=clock))

        def leader() -> float | None:
            return metrics.registry.get_sample_value(
                "gateway_sending_leader", {"backend": "ocamba"}
            )

        try:
            await settle(d)  # every worker has seen itself a follower
            assert leader() == 0
            store.leader_alive = False
            clock.advance(LEADER_RETRY)  # the next tries win: a takeover at +1.0 s
            await write(store, "a", targets=["ocamba"])
            d.notify(["ocamba"])
            await asyncio.wait_for(clock.blocked(2), BOUND)
            assert leader() == 1  # the metric says who sends, even while it waits
            clock.advance(START + 2.0 - clock.now() - 0.01)
            await asyncio.wait_for(clock.blocked(2), BOUND)
            assert ocamba.calls == []  # no worker before the dead leader's window ended
            clock.advance(0.01)
            await settle(d)
            assert ocamba.calls == [["a"]]
        finally:
            await d.stop()
    finally:
        await store.close()
