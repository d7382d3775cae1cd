"""Each backend's error ratio over a recent window, from the dispatcher's counters.

`gateway_deliveries_total` only grows; a ratio over "the last few minutes" needs
earlier readings to subtract. They are taken when the page asks (no background
task for a page nobody may open), so the window actually covered is reported
with the ratio: after a quiet spell it is longer than asked.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence

from gateway.metrics import Metrics
from gateway.schema import Backend

OUTCOMES = ("accepted", "confirmed", "failed", "retry", "dead")
# Attempts that did not get the profile in: transient errors, refusals, retries spent.
BAD = frozenset({"failed", "retry", "dead"})
WINDOW = 300.0
# One reading per this many seconds is plenty; more tabs do not grow the history.
SAMPLE_EVERY = 5.0

Counts = dict[tuple[str, str], float]


class ErrorRatio:
    def __init__(
        self, metrics: Metrics, window: float = WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._metrics = metrics
        self._window = window
        self._clock = clock
        # The counters start at zero with the process's metrics.
        self._samples: collections.deque[tuple[float, Counts]] = collections.deque([(clock(), {})])

    def _read(self, backends: Sequence[Backend]) -> Counts:
        registry = self._metrics.registry
        counts: Counts = {}
        for backend in backends:
            for outcome in OUTCOMES:
                value = registry.get_sample_value(
                    "gateway_deliveries_total", {"backend": backend, "outcome": outcome}
                )
                counts[backend, outcome] = value or 0.0
        return counts

    def measure(
        self, backends: Sequence[Backend]
    ) -> tuple[float, dict[Backend, tuple[float | None, int]]]:
        """(seconds covered, {backend: (ratio or None without outcomes, outcomes)})."""
        now = self._clock()
        counts = self._read(backends)
        if now - self._samples[-1][0] >= SAMPLE_EVERY:
            self._samples.append((now, counts))
        # Keep the newest reading at or before the window's start as the base.
        while len(self._samples) > 1 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()
        since, base = self._samples[0]
        result: dict[Backend, tuple[float | None, int]] = {}
        for backend in backends:
            delta = {o: counts[backend, o] - base.get((backend, o), 0.0) for o in OUTCOMES}
            total = sum(delta.values())
            bad = sum(v for o, v in delta.items() if o in BAD)
            result[backend] = (bad / total if total > 0 else None, round(total))
        return now - since, result
