"""The dispatcher's lanes: real-time first, bulk first every `bulk_share`-th
batch, so a steady real-time stream does not starve a backfill. The clock is
stepped as in test_dispatcher.py; real-time writes keep arriving while each
batch is sent, so both lanes always have due work."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence

import pytest

from gateway.backends.base import Item, Outcome
from gateway.clock import FakeClock
from gateway.config import Settings
from gateway.config_checks import ConfigError
from gateway.dispatch.dispatcher import Dispatcher
from gateway.metrics import Metrics
from gateway.schema import Backend, Lane, NormalizedProfile
from gateway.store.base import NewRequest, Store
from tests.dispatch.test_dispatcher import BOUND, START, drive, run, settings

pytestmark = pytest.mark.anyio

_ids = itertools.count()


@pytest.fixture
def clock(store: Store) -> FakeClock:
    clock = FakeClock(START)
    store.clock = clock
    return clock


async def write(store: Store, lane: Lane, *ids: str) -> None:
    await store.accept(
        NewRequest(
            request_id=f"r-{next(_ids)}",
            app="t",
            targets=["omneo"],
            profiles=[NormalizedProfile(external_id=i) for i in ids],
            received_at=START,
            lane=lane,
        )
    )


class StreamingAdapter:
    """Confirms everything; while each of the first `calls` calls is out,
    `stream` more real-time writes arrive, so real-time work is always waiting
    until then (after that the queue drains and the workers can rest)."""

    name: Backend = "omneo"
    batch_size = 2

    def __init__(self, store: Store, stream: int, calls: int) -> None:
        self.store = store
        self.stream = stream
        self.streaming = calls
        self.calls: list[list[str]] = []
        self._live = itertools.count()

    async def deliver(self, items: Sequence[Item]) -> list[Outcome]:
        self.calls.append([i.profile.external_id for i in items])
        if self.stream and len(self.calls) <= self.streaming:
            await write(
                self.store, "realtime", *(f"r{next(self._live)}" for _ in range(self.stream))
            )
        return [Outcome(i.delivery_id, "confirmed") for i in items]

    def lanes(self) -> list[str]:
        """Each call's lane, from its profiles' names: all `r…` or all `b…`."""
        kinds = [{p[0] for p in call} for call in self.calls]
        assert all(len(k) == 1 for k in kinds), self.calls
        return ["bulk" if k == {"b"} else "realtime" for k in kinds]


def calls_reach(adapter: StreamingAdapter, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(adapter.calls) >= n

    return check


async def start(
    store: Store, clock: FakeClock, share: int, stream: int = 0, calls: int = 0
) -> tuple[Dispatcher, StreamingAdapter, Metrics]:
    adapter = StreamingAdapter(store, stream, calls)
    metrics = Metrics()
    config = settings(bulk_share=share)
    d = await run(Dispatcher(store, {"omneo": adapter}, config, metrics, clock=clock))
    return d, adapter, metrics


@pytest.mark.parametrize("share", [5, 3, 2])
async def test_bulk_gets_every_nth_batch_under_a_steady_realtime_stream(
    store: Store, clock: FakeClock, share: int
) -> None:
    window = 4 * share  # calls during which real-time writes keep arriving
    # The backfill is older than every real-time write.
    await write(store, "bulk", *(f"b{i}" for i in range(40)))
    await write(store, "realtime", "r-a", "r-b")
    d, adapter, metrics = await start(store, clock, share, stream=2, calls=window)
    try:
        d.notify(["omneo"])
        await drive(d, clock, calls_reach(adapter, window))
    finally:
        await d.stop()
    assert adapter.lanes()[:window] == (["realtime"] * (share - 1) + ["bulk"]) * 4
    # The backfill went in the order it was written, and all of it went.
    bulk = [p for call in adapter.calls for p in call if p.startswith("b")]
    assert bulk == [f"b{i}" for i in range(40)]
    assert metrics.claimed.labels("omneo", "bulk")._value.get() == 40
    realtime = sum(len(call) for call in adapter.calls) - 40
    assert metrics.claimed.labels("omneo", "realtime")._value.get() == realtime


async def test_share_zero_sends_bulk_only_when_no_realtime_is_due(
    store: Store, clock: FakeClock
) -> None:
    await write(store, "bulk", *(f"b{i}" for i in range(6)))
    await write(store, "realtime", "r-a", "r-b")
    d, adapter, _ = await start(store, clock, 0, stream=2, calls=10)
    try:
        d.notify(["omneo"])
        await drive(d, clock, calls_reach(adapter, 10))
    finally:
        await d.stop()
    # Starved while the stream lasted; drained once it stopped.
    realtime = len(adapter.calls) - 3
    assert realtime >= 10
    assert adapter.lanes() == ["realtime"] * realtime + ["bulk"] * 3


async def test_a_bulk_turn_with_no_bulk_takes_realtime(store: Store, clock: FakeClock) -> None:
    await write(store, "realtime", *(f"r-{i}" for i in range(12)))
    d, adapter, _ = await start(store, clock, 2)
    try:
        d.notify(["omneo"])
        await drive(d, clock, calls_reach(adapter, 6))
    finally:
        await d.stop()
    assert adapter.lanes() == ["realtime"] * 6


async def test_share_one_takes_bulk_first_every_time(store: Store, clock: FakeClock) -> None:
    await write(store, "realtime", *(f"r-{i}" for i in range(4)))
    await write(store, "bulk", *(f"b{i}" for i in range(4)))
    d, adapter, _ = await start(store, clock, 1)
    try:
        d.notify(["omneo"])
        await drive(d, clock, calls_reach(adapter, 4))
    finally:
        await d.stop()
    assert adapter.lanes() == ["bulk", "bulk", "realtime", "realtime"]


def test_the_share_setting() -> None:
    assert Settings().bulk_share == 5
    for share in ("0", "1", "7"):
        assert Settings.from_env({"GATEWAY_BULK_SHARE": share}).bulk_share == int(share)
    for bad, says in (("-1", "must be 0 or more"), ("2.5", "must be a whole number")):
        with pytest.raises(ConfigError, match=f"GATEWAY_BULK_SHARE {says}"):
            Settings.from_env({"GATEWAY_BULK_SHARE": bad})


class HoldingAdapter:
    """Holds every bulk call until `release` is set (a rate-limited backend's
    bulk batch, paced for minutes); confirms real-time calls at once."""

    name: Backend = "omneo"
    batch_size = 10

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.called = asyncio.Event()

    async def until(self, check: Callable[[], bool]) -> None:
        while not check():
            self.called.clear()
            await self.called.wait()

    async def deliver(self, items: Sequence[Item]) -> list[Outcome]:
        self.calls.append([i.profile.external_id for i in items])
        self.called.set()
        if any(i.lane == "bulk" for i in items):
            await self.release.wait()
        return [Outcome(i.delivery_id, "confirmed") for i in items]


@pytest.mark.parametrize("realtime_workers", [1, 0])
async def test_a_real_time_write_is_sent_while_bulk_batches_hold_every_other_worker(
    store: Store, clock: FakeClock, realtime_workers: int
) -> None:
    await write(store, "bulk", *(f"b{i}" for i in range(40)))
    adapter = HoldingAdapter()
    config = settings(workers_per_backend=2, realtime_workers=realtime_workers)
    d = await run(Dispatcher(store, {"omneo": adapter}, config, Metrics(), clock=clock))
    try:
        d.notify(["omneo"])
        await asyncio.wait_for(adapter.until(lambda: len(adapter.calls) == 2), BOUND)
        await write(store, "realtime", "r-a")
        d.notify(["omneo"])
        if realtime_workers:
            await asyncio.wait_for(adapter.until(lambda: ["r-a"] in adapter.calls), BOUND)
            assert len(adapter.calls) == 3  # the bulk batches still out
        else:
            # Both workers hold bulk batches: the write waits for one of them.
            await asyncio.sleep(0.2)
            assert not any("r-a" in call for call in adapter.calls)
            adapter.release.set()

            async def sent() -> bool:
                return any("r-a" in call for call in adapter.calls)

            await drive(d, clock, sent)
    finally:
        adapter.release.set()
        await d.stop()


async def test_a_batch_is_of_one_lane(store: Store, clock: FakeClock) -> None:
    """A real-time write is never claimed into a bulk batch: there it would stay
    in flight, holding the person's next write, until the whole batch is done."""
    await write(store, "bulk", *(f"b{i}" for i in range(5)))
    await write(store, "realtime", "r-a")
    adapter = HoldingAdapter()
    adapter.release.set()
    config = settings(workers_per_backend=1, realtime_workers=0)
    d = await run(Dispatcher(store, {"omneo": adapter}, config, Metrics(), clock=clock))
    try:
        d.notify(["omneo"])

        async def all_sent() -> bool:
            return sum(len(c) for c in adapter.calls) == 6

        await drive(d, clock, all_sent)
    finally:
        await d.stop()
    assert adapter.calls == [["r-a"], [f"b{i}" for i in range(5)]]
