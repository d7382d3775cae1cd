"""One background loop: a step run again and again, with a rest between steps.

The dispatcher's workers, the webhook applier, the retention purge and the
PostgreSQL LISTEN keeper all run on it. The step says how long to rest:

- `None`: `interval` seconds, or less if `wake()` is called (new work arrived);
- a number of seconds: exactly that long (a backoff; only `stop()` cuts it short);
- `0`: go again at once.

A step that raises is logged and the loop rests, then goes on: one bad step
never ends the loop. Time comes from an injected `Clock`, so tests step a
`FakeClock` instead of sleeping. Imports nothing from gateway's layers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable

from gateway.clock import SYSTEM_CLOCK, Clock

Step = Callable[[], Awaitable[float | None]]

log = logging.getLogger("gateway.worker")


class BackgroundWorker:
    def __init__(
        self,
        name: str,
        step: Step,
        *,
        interval: float,
        clock: Clock = SYSTEM_CLOCK,
        first_delay: float = 0.0,
        error_delay: float | None = None,
        logger: logging.Logger = log,
        failure: str = "background step failed",
    ) -> None:
        """`error_delay` is the rest after a failed step (None: as after an idle one)."""
        self.name = name
        self.interval = interval
        self.clock = clock
        self.first_delay = first_delay
        self.error_delay = error_delay
        self.steps = 0  # steps run, failed ones included
        self.failures = 0
        self._step = step
        self._log = logger
        self._failure = failure
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._resting = asyncio.Event()
        self._rest_until = math.inf
        self._rest_ends = self._stopping  # the event that ends the current rest
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace: float = 0.0) -> None:
        """Let the step under way finish, for at most `grace` seconds (real
        time: shutdown is bounded whatever the clock); then cancel it."""
        self._stopping.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        if grace > 0:
            await asyncio.wait({task}, timeout=grace)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def wake(self) -> None:
        """Cut an idle rest short: there is work now."""
        self._wake.set()

    async def run_once(self) -> float | None:
        """Run one step here and now (for tests); returns its rest."""
        return await self._step()

    async def idle(self) -> None:
        """Return once the loop rests between steps and nothing has ended the
        rest yet: neither its time (on the clock), a wake nor stop. A loop that
        is not running is idle too."""
        while self.running and not self._idle():
            await self._resting.wait()
            await asyncio.sleep(0)  # a rest already ended: let the loop move on

    def _idle(self) -> bool:
        return (
            self._resting.is_set()
            and not self._rest_ends.is_set()
            and self.clock.monotonic() < self._rest_until
        )

    async def _run(self) -> None:
        if self.first_delay > 0:
            await self._rest(self.first_delay, self._stopping)
        while not self._stopping.is_set():
            self._wake.clear()  # a wake during the step below is kept
            try:
                rest = await self._step()
            except Exception:
                self.failures += 1
                self._log.exception(self._failure, extra={"worker": self.name})
                rest = self.error_delay
            self.steps += 1
            if rest is None:
                await self._rest(self.interval, self._wake)  # stop() sets it too
            elif rest > 0:
                await self._rest(rest, self._stopping)
            else:
                await asyncio.sleep(0)

    async def _rest(self, seconds: float, until: asyncio.Event) -> None:
        self._rest_until = self.clock.monotonic() + seconds
        self._rest_ends = until
        self._resting.set()
        try:
            await self.clock.wait(until, seconds)
        finally:
            self._resting.clear()
            self._rest_until = math.inf
