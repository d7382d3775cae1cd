"""Per-app quotas on the inbound API: a token bucket per calling app, counted in
profiles, so that one app's burst cannot fill the store ahead of the others.

`GATEWAY_APP_QUOTAS="crm:1000/5000,shop:200"` gives `crm` 1000 profiles a
second with bursts of up to 5000, and `shop` 200 a second with the default
burst: one second's worth or one full batch (1000), whichever is more, so that
any batch the API accepts fits an app that names only a rate.
`GATEWAY_APP_QUOTA_DEFAULT` (same `rate` or `rate/burst` form) covers every app
not listed; empty (the default) means unlimited. `app:unlimited` exempts one app
from the default.

A write takes as many tokens as it carries profiles; short of them it is
refused (`429`, with `Retry-After` the whole seconds until enough have come
back) and takes none. A write larger than the burst could never pass: `413`.
The buckets are per process and in memory: with N replicas behind a load
balancer an app may send up to N times its rate, so give each replica rate/N.
Imports nothing from gateway but the clock: every layer may use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.clock import SYSTEM_CLOCK, Clock

# Without an explicit burst: at least one full batch (schema.MAX_BATCH) fits.
MIN_DEFAULT_BURST = 1000
UNLIMITED = "unlimited"


class QuotaSpecError(ValueError):
    """A quota setting is unusable; the message says which part and why."""


@dataclass(frozen=True)
class Quota:
    rate: float  # profiles per second, more than 0
    burst: int  # most profiles at once, at least 1

    @classmethod
    def parse(cls, text: str) -> Quota:
        """`rate` or `rate/burst`: profiles per second (may be fractional) and a
        whole number of profiles."""
        rate_text, slash, burst_text = text.strip().partition("/")
        try:
            rate = float(rate_text)
        except ValueError:
            raise QuotaSpecError(
                f"{text.strip()[:40]!r} is not rate or rate/burst (profiles per second"
                " and profiles at once, such as 200 or 1000/5000)"
            ) from None
        if not math.isfinite(rate) or rate <= 0:
            raise QuotaSpecError(f"the rate must be a number more than 0, not {rate_text!r}")
        if not slash:
            return cls(rate, max(math.ceil(rate), MIN_DEFAULT_BURST))
        burst_text = burst_text.strip()
        if not burst_text.isascii() or not burst_text.isdigit() or int(burst_text) < 1:
            raise QuotaSpecError(
                f"the burst must be a whole number of 1 or more, not {burst_text!r}"
            )
        return cls(rate, int(burst_text))


def parse_quotas(spec: str, apps: Iterable[str]) -> dict[str, Quota | None]:
    """app -> its quota (None: unlimited) from `app:rate[/burst],...`. Every app
    must be one of `apps` (those with a token), once."""
    known = set(apps)
    quotas: dict[str, Quota | None] = {}
    for position, item in enumerate((part.strip() for part in spec.split(",")), 1):
        if not item:
            continue
        app, colon, value = item.partition(":")
        app = app.strip()
        if not colon or not app or not value.strip():
            raise QuotaSpecError(f"entry {position} is not app:rate or app:rate/burst")
        if app not in known:
            raise QuotaSpecError(f"app {app!r} has no token in GATEWAY_API_TOKENS")
        if app in quotas:
            raise QuotaSpecError(f"app {app!r} is listed twice")
        try:
            quotas[app] = None if value.strip() == UNLIMITED else Quota.parse(value)
        except QuotaSpecError as exc:
            raise QuotaSpecError(f"app {app!r}: {exc}") from None
    return quotas


class TokenBucket:
    """`quota.burst` tokens at most, refilled at `quota.rate` a second; starts full."""

    def __init__(self, quota: Quota, clock: Clock = SYSTEM_CLOCK) -> None:
        self.quota = quota
        self._clock = clock
        self._tokens = float(quota.burst)
        self._at = clock.monotonic()

    def _refill(self) -> float:
        now = self._clock.monotonic()
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._tokens = min(float(self.quota.burst), self._tokens + elapsed * self.quota.rate)
        return self._tokens

    @property
    def tokens(self) -> float:
        return self._refill()

    def take(self, count: int) -> int | None:
        """Takes `count` tokens and returns None, or takes none and returns the
        whole seconds (at least 1) until `count` are there. `count` above the
        burst never fits: the caller refuses it before asking."""
        have = self._refill()
        # The slack absorbs float error: Retry-After seconds later, the tokens are there.
        if have + 1e-6 >= count:
            self._tokens = max(0.0, have - count)
            return None
        return max(1, math.ceil((count - have) / self.quota.rate))

    def give_back(self, count: int) -> None:
        """Returns tokens a write took but did not use (refused, replayed)."""
        self._tokens = min(float(self.quota.burst), self._refill() + count)


class AppQuotas:
    """The bucket of each app with a quota; apps without one are unlimited."""

    def __init__(
        self,
        quotas: Mapping[str, Quota | None],
        default: Quota | None,
        apps: Iterable[str],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.buckets: dict[str, TokenBucket] = {}
        for app in sorted(set(apps)):
            quota = quotas.get(app, default)
            if quota is not None:
                self.buckets[app] = TokenBucket(quota, clock)

    def bucket(self, app: str) -> TokenBucket | None:
        return self.buckets.get(app)
