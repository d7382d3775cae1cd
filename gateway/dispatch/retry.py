"""When to try a failed delivery again.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the
retries of a batch that failed together, so they do not all hit a recovering
backend in the same instant; a server's `Retry-After` is a floor on top of it.
Whether an answer is worth a retry at all, and what its `Retry-After` says, is
the transport's reading (`gateway.backends.transport.classify`).
"""

from __future__ import annotations

import random

import msgspec

from gateway.config import Settings


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
            # A negative value (the transport's TOO_MANY_IN_FLIGHT) is no floor:
            # nothing to wait for.
            delay = retry_after
        return delay

    def exhausted(self, attempts: int) -> bool:
        """True once `attempts` (including the one that just failed) is the last allowed."""
        return attempts >= self.max_attempts
