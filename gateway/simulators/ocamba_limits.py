"""Ocamba Hood's per-account limits: a burst window, a steady window, and a cap on
requests in flight at once.

Only admitted requests consume quota; a request refused with 429 does not, so a
client that backs off correctly is not punished twice. Arrivals (admitted or
not) are counted separately: `max_arrivals_*` is what shows a client that sent
more than the limits allow, since admitted counts can never exceed them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec

from gateway.simulators.windows import FixedWindow


class OcambaLimits(msgspec.Struct, kw_only=True, frozen=True):
    per_second: int = 10
    per_minute: int = 150
    second_window: float = 1.0
    minute_window: float = 60.0
    max_in_flight: int = 4


class OcambaLimitStats(msgspec.Struct, kw_only=True):
    """Counters a test or benchmark asserts on (across all accounts)."""

    admitted: int = 0
    throttled_window: int = 0  # 429 with Retry-After >= 1: a window was full
    throttled_concurrency: int = 0  # 429 with Retry-After: -1: too many in flight
    max_admitted_second_window: int = 0
    max_admitted_minute_window: int = 0
    max_arrivals_second_window: int = 0
    max_arrivals_minute_window: int = 0
    max_in_flight_seen: int = 0


class Admission(msgspec.Struct, frozen=True):
    admitted: bool
    retry_after: int | None = None  # set when refused; -1 for the in-flight cap


class _Account:
    def __init__(self, limits: OcambaLimits) -> None:
        self.second = FixedWindow(limits.second_window)
        self.minute = FixedWindow(limits.minute_window)
        self.arrivals_second = FixedWindow(limits.second_window)
        self.arrivals_minute = FixedWindow(limits.minute_window)
        self.in_flight = 0


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class OcambaLimiter:
    """Admission control for every authenticated request, keyed by account token."""

    def __init__(self, limits: OcambaLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self.stats = OcambaLimitStats()
        self._accounts: dict[str, _Account] = {}

    def _account(self, key: str) -> _Account:
        account = self._accounts.get(key)
        if account is None:
            account = self._accounts[key] = _Account(self.limits)
        return account

    def admit(self, key: str) -> Admission:
        now = self.clock()
        account = self._account(key)
        stats = self.stats
        stats.max_arrivals_second_window = max(
            stats.max_arrivals_second_window, account.arrivals_second.add(now)
        )
        stats.max_arrivals_minute_window = max(
            stats.max_arrivals_minute_window, account.arrivals_minute.add(now)
        )
        # The steady window is checked first: when both are full, the minute is
        # the one whose reset the client really has to wait for.
        if account.minute.count(now) >= self.limits.per_minute:
            stats.throttled_window += 1
            return Admission(False, _whole_seconds(account.minute.resets_in(now)))
        if account.second.count(now) >= self.limits.per_second:
            stats.throttled_window += 1
            return Admission(False, _whole_seconds(account.second.resets_in(now)))
        if account.in_flight >= self.limits.max_in_flight:
            stats.throttled_concurrency += 1
            return Admission(False, -1)
        stats.admitted += 1
        stats.max_admitted_second_window = max(
            stats.max_admitted_second_window, account.second.add(now)
        )
        stats.max_admitted_minute_window = max(
            stats.max_admitted_minute_window, account.minute.add(now)
        )
        account.in_flight += 1
        stats.max_in_flight_seen = max(stats.max_in_flight_seen, account.in_flight)
        return Admission(True)

    def release(self, key: str) -> None:
        self._account(key).in_flight -= 1

    def in_flight(self, key: str) -> int:
        return self._account(key).in_flight

    def headers(self, key: str) -> dict[str, str]:
        """The X-RateLimit-* headers, as of now, for the steady (minute) window."""
        now = self.clock()
        minute = self._account(key).minute
        remaining = max(0, self.limits.per_minute - minute.count(now))
        return {
            "X-RateLimit-Limit": str(self.limits.per_minute),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(_whole_seconds(minute.resets_in(now))),
        }
