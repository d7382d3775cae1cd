"""When to try a failed delivery again, and whether an HTTP answer is worth it.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the
retries of a batch that failed together, so they do not all hit a recovering
backend in the same instant; a server's `Retry-After` is a floor on top of it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import random
import time
from collections.abc import Callable
from typing import Final, Literal

import msgspec

from gateway.config import Settings

Classification = Literal["transient", "permanent"]

# Ocamba answers `Retry-After: -1` when the account has too many requests in
# flight. Waiting cannot help with that, sending fewer at once can, so it gets
# a value no real delay can have and the pacer reacts to it instead of sleeping.
TOO_MANY_IN_FLIGHT: Final[float] = -1.0

# 501 (Not Implemented) and 505 (HTTP Version Not Supported) describe the
# request, not the server's health: a retry gets the same answer.
_PERMANENT_5XX: Final = frozenset({501, 505})


class RetryPolicy(msgspec.Struct, frozen=True):
    base: float
    cap: float
    max_attempts: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            base=settings.retry_base, cap=settings.retry_cap, max_attempts=settings.max_attempts
        )

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after attempt number `attempt` (1-based) failed."""
        exponent = max(attempt, 1) - 1
        # 2**exponent overflows a float long before attempts get that high in
        # practice, but a misconfigured max_attempts must not crash the dispatcher.
        ceiling = self.cap if exponent >= 64 else min(self.cap, self.base * 2.0**exponent)
        delay = rng.uniform(0.0, max(ceiling, 0.0))
        if retry_after is not None and retry_after > delay:
            # A negative value (TOO_MANY_IN_FLIGHT) is no floor: nothing to wait for.
            delay = retry_after
        return delay

    def exhausted(self, attempts: int) -> bool:
        """True once `attempts` (including the one that just failed) is the last allowed."""
        return attempts >= self.max_attempts


def classify(status: int) -> Classification:
    """Whether a non-2xx HTTP status is worth retrying."""
    if status in (408, 429):
        return "transient"
    if 500 <= status <= 599 and status not in _PERMANENT_5XX:
        return "transient"
    return "permanent"


def parse_retry_after(header: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or HTTP-date).

    Returns `TOO_MANY_IN_FLIGHT` for Ocamba's `-1`, None when absent or unreadable
    (an unreadable hint is no reason to fail the call; backoff still applies).
    """
    if header is None:
        return None
    text = header.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until(text, now())
    if seconds == TOO_MANY_IN_FLIGHT:
        return TOO_MANY_IN_FLIGHT
    if seconds < 0 or math.isnan(seconds) or math.isinf(seconds):
        return None
    return seconds


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; parsedate_to_datetime leaves "-0000" naive.
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)
