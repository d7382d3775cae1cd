"""The pacer's order between lanes and its spread of the steady window."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gateway.backends.transport.pacing import FixedWindowPacer
from gateway.backends.transport.turns import LaneTurns
from gateway.schema import Lane
from tests.backends.transport.test_pacing import pacer
from tests.dispatch.fakes import FakeClock

pytestmark = pytest.mark.anyio


def ocamba_like(clock: FakeClock, **kwargs: object) -> FixedWindowPacer:
    """Ocamba's documented limits (test_pacing.py's pacer, other numbers)."""
    return pacer(clock, **{"per_second": 10, "per_minute": 150, "max_in_flight": 4, **kwargs})


async def admit_all(p: FixedWindowPacer, clock: FakeClock, n: int) -> list[float]:
    times = []
    for _ in range(n):
        permit = await p.acquire()
        times.append(clock.now)
        p.release(permit, 202, {})
    return times


async def test_the_steady_window_is_spread_evenly_and_still_spent_whole() -> None:
    clock = FakeClock(start=600.0)  # a minute window [600, 660)
    p = ocamba_like(clock)

    times = await admit_all(p, clock, 150)

    # The k-th no sooner than k/150 of the way through the window: one every
    # 0.4 s, so none of the window's end is left without budget.
    assert all(t >= 600.0 + k * 0.4 - 1e-9 for k, t in enumerate(times))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(0.4, abs=0.01)
    # All 150 inside the window, the last in its final 0.5 s.
    assert 659.5 <= times[-1] < 660.0
    # The 151st waits for the next window.
    assert (await admit_all(p, clock, 1))[0] >= 660.0


async def test_behind_the_pace_calls_go_at_once_up_to_the_second_limit() -> None:
    clock = FakeClock(start=630.0)  # half the window [600, 660) gone unused
    p = ocamba_like(clock)

    times = await admit_all(p, clock, 30)

    # 75 slots are due by now: the first 10 go at once (the 1 s window's
    # limit), then 10 a second, not one every 0.4 s.
    assert times[:10] == [630.0] * 10
    assert times[-1] < 633.0


async def test_unspread_the_window_is_spent_at_the_burst_rate() -> None:
    clock = FakeClock(start=600.0)
    p = ocamba_like(clock, spread=False)

    times = await admit_all(p, clock, 150)

    # 10 a second: the whole minute's budget gone in its first 15 s.
    assert times[-1] < 615.0


async def test_a_real_time_call_goes_before_bulk_calls_already_waiting() -> None:
    clock = FakeClock(start=600.0)

    async def sleep(seconds: float) -> None:
        # A sleep others can queue behind while it lasts.
        clock.now += seconds
        for _ in range(10):
            await asyncio.sleep(0)

    p = ocamba_like(clock, bulk_share=0, sleep=sleep)
    await admit_all(p, clock, 10)  # the burst is spent: each next slot is 0.4 s away
    order: list[str] = []

    async def call(name: str, lane: Lane) -> None:
        permit = await p.acquire(lane=lane)
        order.append(name)
        p.release(permit, 202, {})

    bulk = [asyncio.create_task(call(f"bulk-{i}", "bulk")) for i in range(5)]
    await asyncio.sleep(0)  # the bulk calls queue first
    realtime = asyncio.create_task(call("realtime", "realtime"))
    await asyncio.gather(*bulk, realtime)

    # bulk-0 held the turn (asleep for its slot) when the real-time call came;
    # the real-time call has the next slot, 0.4 s later, not the sixth.
    assert order[:2] == ["bulk-0", "realtime"]


async def test_bulk_gets_every_share_th_turn_when_both_lanes_wait() -> None:
    turns = LaneTurns(share=5)
    await turns.acquire("realtime")  # held: everyone else waits
    order: list[Lane] = []

    async def waiter(lane: Lane) -> None:
        await turns.acquire(lane)
        order.append(lane)
        turns.release()

    tasks = [asyncio.create_task(waiter("bulk")) for _ in range(3)]
    tasks += [asyncio.create_task(waiter("realtime")) for _ in range(10)]
    await asyncio.sleep(0)
    turns.release()
    await asyncio.gather(*tasks)

    assert order == ["realtime"] * 4 + ["bulk"] + ["realtime"] * 4 + ["bulk"] + ["realtime"] * 2 + [
        "bulk"
    ]


async def test_with_share_zero_bulk_waits_for_real_time() -> None:
    turns = LaneTurns(share=0)
    await turns.acquire("bulk")
    order: list[Lane] = []

    async def waiter(lane: Lane) -> None:
        await turns.acquire(lane)
        order.append(lane)
        turns.release()

    tasks = [asyncio.create_task(waiter("bulk")) for _ in range(2)]
    tasks += [asyncio.create_task(waiter("realtime")) for _ in range(6)]
    await asyncio.sleep(0)
    turns.release()
    await asyncio.gather(*tasks)

    assert order == ["realtime"] * 6 + ["bulk"] * 2


async def test_a_waiter_cancelled_in_the_queue_does_not_take_or_lose_a_turn() -> None:
    turns = LaneTurns(share=5)
    await turns.acquire("bulk")
    gone = asyncio.create_task(turns.acquire("realtime"))
    stays = asyncio.create_task(turns.acquire("bulk"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    turns.release()

    await asyncio.wait_for(stays, 1)
    turns.release()
    # Free again: a newcomer gets the turn at once.
    await asyncio.wait_for(turns.acquire("realtime"), 1)
