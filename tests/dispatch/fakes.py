"""A clock and a sleep that tests step by hand, so pacing is exact and instant."""

from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        # Let other tasks run, as a real sleep would.
        await asyncio.sleep(0)
