"""Fixed-window counting, as vendors that publish "N per second / per minute" use it.

A window is aligned to wall-clock multiples of its length (`floor(now / length)`),
not to the first request: a client that sends a burst at second 59.9 and another
at 60.0 gets both admitted. That edge is exactly what a client's pacing must
survive, so the simulator keeps it rather than smoothing it away.
"""

from __future__ import annotations

import math


class FixedWindow:
    """Counts events in the current window and remembers the busiest window seen."""

    def __init__(self, length: float) -> None:
        if length <= 0:
            raise ValueError("window length must be positive")
        self.length = length
        self.max_count = 0
        self._index: int | None = None
        self._count = 0

    def index(self, now: float) -> int:
        return math.floor(now / self.length)

    def count(self, now: float) -> int:
        self._roll(now)
        return self._count

    def add(self, now: float) -> int:
        """Counts one event at `now`; returns the count in its window."""
        self._roll(now)
        self._count += 1
        self.max_count = max(self.max_count, self._count)
        return self._count

    def resets_in(self, now: float) -> float:
        """Seconds until the window holding `now` ends (in `(0, length]`)."""
        return (self.index(now) + 1) * self.length - now

    def _roll(self, now: float) -> None:
        index = self.index(now)
        if index != self._index:
            self._index = index
            self._count = 0
