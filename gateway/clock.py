"""Time as the background loops see it: read it, sleep on it, wait with a timeout.

`SystemClock` is the real one. `FakeClock` stands still until a test calls
`advance()`, which wakes every sleeper whose deadline has passed, so a test
steps time instead of sleeping through it. Imports nothing from gateway: every
layer may use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, seconds since the epoch (what the store records)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals)."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until `event` is set, at most `seconds`; True if it is set."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        return event.is_set()


SYSTEM_CLOCK = SystemClock()


@dataclass(eq=False)
class _Sleeper:
    deadline: float
    woken: asyncio.Future[None]
    event: asyncio.Event | None

    def pending(self, now: float) -> bool:
        """Still asleep: neither its deadline nor its event has come."""
        return not self.woken.done() and self.deadline > now and not self._event_set()

    def _event_set(self) -> bool:
        return self.event is not None and self.event.is_set()


class FakeClock:
    """A clock that moves only when told to: `advance()` wakes due sleepers,
    `blocked(n)` waits until n tasks sleep on it (the moment to advance)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._sleepers: list[_Sleeper] = []
        self._slept = asyncio.Event()
        self.sleeps: list[float] = []  # every sleep or wait timeout asked for

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now  # one time line: what advance() moves

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go back")
        self._now += seconds
        for sleeper in self._sleepers:
            if sleeper.deadline <= self._now and not sleeper.woken.done():
                sleeper.woken.set_result(None)

    def pending(self) -> int:
        """How many tasks sleep on this clock, not yet woken."""
        return sum(s.pending(self._now) for s in self._sleepers)

    def next_deadline(self) -> float | None:
        deadlines = [s.deadline for s in self._sleepers if s.pending(self._now)]
        return min(deadlines, default=None)

    async def blocked(self, count: int = 1) -> None:
        """Return once at least `count` tasks sleep on this clock, none woken."""
        while self.pending() < count:
            self._slept.clear()
            await self._slept.wait()

    async def sleep(self, seconds: float) -> None:
        await self._park(seconds, None)

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if not event.is_set():
            await self._park(seconds, event)
        return event.is_set()

    async def _park(self, seconds: float, event: asyncio.Event | None) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        sleeper = _Sleeper(self._now + seconds, asyncio.get_running_loop().create_future(), event)
        self._sleepers.append(sleeper)
        self._slept.set()
        waiter: asyncio.Task[Literal[True]] | None = None
        try:
            if event is None:
                await sleeper.woken
            else:
                waiter = asyncio.ensure_future(event.wait())
                either: set[asyncio.Future[Any]] = {sleeper.woken, waiter}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if waiter is not None:
                waiter.cancel()
            sleeper.woken.cancel()
            self._sleepers.remove(sleeper)
