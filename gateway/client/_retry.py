"""When to send a call again, and after how long: no I/O here.

Sent again: `408` (the gateway stored nothing), `429` and `503` (it asks for a
retry, with `Retry-After`), `502` and `504` (a proxy in front of it), and the
transport's timeouts and connection errors. Everything else is an answer.
Every retry of one call carries the call's Idempotency-Key, so a retry of a
write the gateway did store (its answer lost to a timeout) is answered from
that write, never stored twice.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
# A request the server may or may not have received: safe to send again only
# because every call carries its Idempotency-Key (reads are safe anyway).
RETRY_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, or the server's `Retry-After` when it says.

    `attempts` counts every try of one call, the first included. The wait before
    retry `n` (0-based) is `min(cap, base * 2**n)`, scaled by a random factor in
    [0.5, 1] (`jitter`, injectable); a `Retry-After` of `s` seconds (or an
    HTTP date, read with `clock`) waits `s` instead, at most `max_retry_after`.
    """

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 120.0
    jitter: Callable[[], float] = field(default=random.random, compare=False)
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def backoff(self, retry: int) -> float:
        full = min(self.cap, self.base * 2.0**retry)
        return full * (0.5 + 0.5 * self.jitter())

    def retry_after(self, value: str | None) -> float | None:
        """Seconds from a `Retry-After` header, or None when absent or unreadable."""
        if value is None:
            return None
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            seconds = when.timestamp() - self.clock()
        if not math.isfinite(seconds):
            return None
        return min(self.max_retry_after, max(0.0, seconds))

    def delay(self, retry: int, response: httpx.Response | None) -> float:
        """The wait before retry `retry` (0 for the first retry)."""
        if response is not None:
            told = self.retry_after(response.headers.get("retry-after"))
            if told is not None:
                return told
        return self.backoff(retry)


def should_retry(response: httpx.Response) -> bool:
    return response.status_code in RETRY_STATUSES
