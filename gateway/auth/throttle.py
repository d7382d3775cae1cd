"""Failed authentication, counted per client address, slows a guesser down.

After `limit` failures within `window` seconds an address gets `429` with
`Retry-After` on every authenticated route until the window ends, whatever it
presents: a token that works must not tell a guesser it found one. Only
presented credentials count (a wrong bearer token, a wrong token in the
sign-in form); a request without any is a client that forgot them, not a guess.

The count is per process (each replica throttles on its own) and in memory: a
fixed window per address, at most `MAX_ADDRESSES` of them, so a flood of
addresses cannot grow it without bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

MAX_ADDRESSES = 10_000


class AuthThrottle:
    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit  # 0: never throttle
        self.window = window
        self._clock = clock
        self._failures: dict[str, tuple[float, int]] = {}  # address -> (window start, count)

    def retry_after(self, address: str) -> int | None:
        """Seconds `address` must wait before it may try again, or None."""
        if self.limit <= 0:
            return None
        entry = self._failures.get(address)
        if entry is None:
            return None
        started, count = entry
        left = started + self.window - self._clock()
        if left <= 0:
            del self._failures[address]
            return None
        return max(1, math.ceil(left)) if count >= self.limit else None

    def failed(self, address: str) -> None:
        if self.limit <= 0:
            return
        now = self._clock()
        started, count = self._failures.pop(address, (now, 0))
        if now - started >= self.window:
            started, count = now, 0
        if len(self._failures) >= MAX_ADDRESSES:
            self._forget(now)
        # Re-inserted last: the dict then runs from the least recent failure.
        self._failures[address] = (started, count + 1)

    def _forget(self, now: float) -> None:
        for address, (started, _) in list(self._failures.items()):
            if now - started >= self.window:
                del self._failures[address]
        while len(self._failures) >= MAX_ADDRESSES:
            del self._failures[next(iter(self._failures))]
