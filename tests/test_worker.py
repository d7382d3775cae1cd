"""The background-loop helper and the fake clock, stepped by hand: no real sleeps."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from gateway.clock import FakeClock, SystemClock
from gateway.worker import BackgroundWorker

pytestmark = pytest.mark.anyio

BOUND = 5.0  # real seconds a test may wait for the loop before it fails


class Steps:
    """A step that returns the rests it is given, in order, then None."""

    def __init__(self, *rests: float | None) -> None:
        self.rests = list(rests)
        self.at: list[float] = []  # the clock's time at each step
        self.clock: FakeClock | None = None

    async def __call__(self) -> float | None:
        assert self.clock is not None
        self.at.append(self.clock.now())
        return self.rests.pop(0) if self.rests else None


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=100.0)


@pytest.fixture
async def running() -> AsyncIterator[list[BackgroundWorker]]:
    workers: list[BackgroundWorker] = []
    yield workers
    for w in workers:
        await w.stop()


def worker(
    clock: FakeClock,
    steps: Steps,
    running: list[BackgroundWorker],
    *,
    interval: float = 10.0,
    first_delay: float = 0.0,
) -> BackgroundWorker:
    steps.clock = clock
    w = BackgroundWorker("test", steps, clock=clock, interval=interval, first_delay=first_delay)
    running.append(w)
    w.start()
    return w


async def idle(w: BackgroundWorker) -> None:
    await asyncio.wait_for(w.idle(), BOUND)


async def test_idle_steps_come_every_interval_of_the_clock(
    clock: FakeClock, running: list[BackgroundWorker]
) -> None:
    steps = Steps()
    w = worker(clock, steps, running)
    await idle(w)
    assert steps.at == [100.0]
    clock.advance(9.9)
    await idle(w)
    assert steps.at == [100.0]  # not yet
    clock.advance(0.1)
    await idle(w)
    assert steps.at == [100.0, 110.0]
    clock.advance(10)
    await idle(w)
    assert steps.at == [100.0, 110.0, 120.0]
    assert clock.sleeps == [10.0, 10.0, 10.0]


async def test_wake_cuts_an_idle_rest_short(
    clock: FakeClock, running: list[BackgroundWorker]
) -> None:
    steps = Steps()
    w = worker(clock, steps, running, interval=60.0)
    await idle(w)
    w.wake()
    await idle(w)
    assert steps.at == [100.0, 100.0]  # the second step came without time passing


async def test_a_wake_during_a_step_is_not_lost(
    clock: FakeClock, running: list[BackgroundWorker]
) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        entered.set()
        await gate.wait()

    w = BackgroundWorker("test", step, interval=60.0, clock=clock)
    running.append(w)
    w.start()
    await asyncio.wait_for(entered.wait(), BOUND)
    w.wake()  # new work arrives while the step runs
    gate.set()
    await idle(w)
    assert calls == 2 and clock.now() == 100.0


async def test_a_backoff_rest_is_not_cut_short_by_wake(
    clock: FakeClock, running: list[BackgroundWorker]
) -> None:
    steps = Steps(5.0)
    w = worker(clock, steps, running)
    await idle(w)
    w.wake()
    await idle(w)
    assert steps.at == [100.0]
    clock.advance(5.0)
    await idle(w)
    assert steps.at == [100.0, 105.0]


async def test_a_zero_rest_goes_again_at_once(
    clock: FakeClock, running: list[BackgroundWorker]
) -> None:
    steps = Steps(0, 0, 0)
    w = worker(clock, steps, running)
    await idle(w)
    assert steps.at == [100.0] * 4
    assert w.steps == 4


async def test_the_first_step_waits_the_first_delay(
    clock: FakeClock, running: list[BackgroundWorker]
) -> None:
    steps = Steps()
    w = worker(clock, steps, running, first_delay=60.0)
    await idle(w)
    w.wake()  # the first delay is not work arriving
    await idle(w)
    assert steps.at == []
    clock.advance(60.0)
    await idle(w)
    assert steps.at == [160.0]


async def test_a_failing_step_is_logged_and_the_loop_goes_on(
    clock: FakeClock, running: list[BackgroundWorker], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[float] = []

    async def step() -> None:
        calls.append(clock.now())
        if len(calls) == 1:
            raise RuntimeError("boom")

    w = BackgroundWorker(
        "flaky", step, interval=10.0, error_delay=3.0, clock=clock, failure="flaky step failed"
    )
    running.append(w)
    with caplog.at_level(logging.ERROR, logger="gateway.worker"):
        w.start()
        await idle(w)
    assert w.failures == 1 and w.running
    [record] = [r for r in caplog.records if r.getMessage() == "flaky step failed"]
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])
    clock.advance(3.0)  # the error delay, not the interval
    await idle(w)
    assert calls == [100.0, 103.0] and w.failures == 1
    clock.advance(10.0)
    await idle(w)
    assert calls == [100.0, 103.0, 113.0]


async def test_stop_lets_the_step_under_way_finish(clock: FakeClock) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def step() -> None:
        entered.set()
        await gate.wait()
        finished.append(True)

    w = BackgroundWorker("test", step, interval=10.0, clock=clock)
    w.start()
    await asyncio.wait_for(entered.wait(), BOUND)
    stopping = asyncio.create_task(w.stop(grace=BOUND))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not stopping.done()  # waiting for the step, not cancelling it
    gate.set()
    await asyncio.wait_for(stopping, BOUND)
    assert finished == [True] and not w.running and w.steps == 1


async def test_stop_cancels_a_step_that_outlasts_the_grace(clock: FakeClock) -> None:
    entered = asyncio.Event()
    cancelled: list[bool] = []

    async def step() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()  # never ends
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    w = BackgroundWorker("test", step, interval=10.0, clock=clock)
    w.start()
    await asyncio.wait_for(entered.wait(), BOUND)
    await asyncio.wait_for(w.stop(grace=0.05), BOUND)
    assert cancelled == [True] and not w.running


async def test_stop_ends_a_rest_at_once(clock: FakeClock) -> None:
    steps = Steps(3600.0)
    steps.clock = clock
    w = BackgroundWorker("test", steps, interval=10.0, clock=clock)
    w.start()
    await idle(w)
    task = w._task
    assert task is not None
    await asyncio.wait_for(w.stop(grace=BOUND), BOUND)
    assert task.done() and not task.cancelled()  # it ended by itself, not by cancel
    assert steps.at == [100.0]
    await idle(w)  # a stopped loop is idle: nothing to wait for


async def test_run_once_runs_one_step_here(clock: FakeClock) -> None:
    steps = Steps(7.0)
    steps.clock = clock
    w = BackgroundWorker("test", steps, interval=10.0, clock=clock)
    assert await w.run_once() == 7.0
    assert steps.at == [100.0] and not w.running


# -- the clocks -----------------------------------------------------------------


async def test_advance_wakes_only_the_sleepers_whose_time_came(clock: FakeClock) -> None:
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(seconds)

    tasks = [asyncio.create_task(sleeper(s)) for s in (1.0, 2.0, 3.0)]
    await asyncio.wait_for(clock.blocked(3), BOUND)
    assert clock.next_deadline() == 101.0
    clock.advance(2.0)
    await asyncio.wait_for(asyncio.gather(*tasks[:2]), BOUND)
    assert woke == [1.0, 2.0] and clock.pending() == 1 and not tasks[2].done()
    clock.advance(1.0)
    await asyncio.wait_for(tasks[2], BOUND)
    assert woke == [1.0, 2.0, 3.0] and clock.pending() == 0


async def test_wait_returns_on_the_event_or_the_timeout(clock: FakeClock) -> None:
    event = asyncio.Event()
    by_event = asyncio.create_task(clock.wait(event, 10.0))
    await asyncio.wait_for(clock.blocked(1), BOUND)
    event.set()
    assert await asyncio.wait_for(by_event, BOUND) is True
    assert clock.now() == 100.0

    event.clear()
    by_timeout = asyncio.create_task(clock.wait(event, 10.0))
    await asyncio.wait_for(clock.blocked(1), BOUND)
    clock.advance(10.0)
    assert await asyncio.wait_for(by_timeout, BOUND) is False
    assert clock.pending() == 0


async def test_a_cancelled_sleeper_leaves_the_clock(clock: FakeClock) -> None:
    task = asyncio.create_task(clock.sleep(5.0))
    await asyncio.wait_for(clock.blocked(1), BOUND)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending() == 0 and clock.next_deadline() is None


def test_the_fake_clock_does_not_go_back(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_the_system_clock_waits_for_an_event_and_times_out() -> None:
    real = SystemClock()
    event = asyncio.Event()
    assert await real.wait(event, 0) is False
    event.set()
    assert await real.wait(event, 60) is True
    assert real.now() > 1.6e9 and real.monotonic() <= real.monotonic()
