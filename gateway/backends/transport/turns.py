"""Whose call goes next at a backend's pacer: real-time before bulk.

The pacer admits one waiter at a time (the holder may sleep for a window);
`LaneTurns` is the lock it holds meanwhile. A waiter of the `realtime` lane
goes before every `bulk` one, except that when both are waiting every
`share`-th turn goes to bulk, so a steady real-time stream cannot starve a
backfill (`GATEWAY_BULK_SHARE`; 0: bulk only when no real-time call waits).
Within a lane, turns go in arrival order. Claims already take real-time first
(gateway/dispatch/lanes.py); this is the same rule where the budget is spent,
so a bulk batch claimed a moment earlier cannot hold its calls ahead of a
real-time write that arrives while they wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

from gateway.backends.base import Lane

_LANES: Final[tuple[Lane, ...]] = ("realtime", "bulk")


class LaneTurns:
    def __init__(self, share: int = 5) -> None:
        if share < 0:
            raise ValueError("share must be 0 or more")
        self.share = share
        self._held = False
        self._waiting: dict[Lane, deque[asyncio.Future[None]]] = {lane: deque() for lane in _LANES}
        # Real-time turns given in a row while bulk was waiting.
        self._realtime_run = 0

    async def acquire(self, lane: Lane) -> None:
        if not self._held and not any(self._waiting.values()):
            self._held = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[lane].append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Given the turn just as we were cancelled: pass it on.
                self.release()
            else:
                self._waiting[lane].remove(future)
            raise

    def release(self) -> None:
        """Hands the turn to the next waiter, or frees it."""
        nxt = self._next()
        if nxt is None:
            self._held = False
            return
        nxt.set_result(None)  # the turn passes straight on: still held

    def _next(self) -> asyncio.Future[None] | None:
        realtime, bulk = self._waiting["realtime"], self._waiting["bulk"]
        for queue in (realtime, bulk):
            while queue and queue[0].done():  # cancelled while waiting
                queue.popleft()
        if realtime and bulk:
            if self.share and self._realtime_run >= self.share - 1:
                self._realtime_run = 0
                return bulk.popleft()
            self._realtime_run += 1
            return realtime.popleft()
        if realtime:
            return realtime.popleft()
        if bulk:
            self._realtime_run = 0
            return bulk.popleft()
        return None
