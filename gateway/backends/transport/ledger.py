"""Which of our requests the server may count in a window that has just begun.

A server counts a request when it gets there, not when our pacer let it go;
the time between the two (the event loop, the network, the server's own queue)
has no bound we can rely on: a loaded 2-core machine showed 0.27 s, past the
fixed 0.25 s guard a window used to carry. So a window does not guess from
admission times. A request the server answered before a boundary was counted
before it; one still unanswered at the boundary may be counted after it, and
counts in the new window too. The cost is the handful of requests in flight at
a boundary, not a slice of every window.
"""

from __future__ import annotations

from collections import deque


class Ledger:
    """Admission and answer times of our recent requests, by a key each."""

    def __init__(self, horizon: float = 0.0) -> None:
        """`horizon`: the longest window asking; an answer older than that
        cannot straddle any boundary a window will roll over."""
        self.horizon = horizon
        self._open: dict[object, float] = {}
        self._closed: deque[tuple[float, float]] = deque()  # (admitted, answered), by answer

    def open(self, key: object, now: float) -> None:
        self._open[key] = now

    def close(self, key: object, now: float) -> None:
        admitted = self._open.pop(key)
        self._closed.append((admitted, now))
        while self._closed and self._closed[0][1] < now - self.horizon:
            self._closed.popleft()

    def straddling(self, boundary: float) -> int:
        """Requests let go before `boundary` and unanswered at it."""
        still_open = sum(1 for admitted in self._open.values() if admitted < boundary)
        answered_after = sum(
            1 for admitted, answered in self._closed if admitted < boundary <= answered
        )
        return still_open + answered_after
