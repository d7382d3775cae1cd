"""Pacing for one backend account: how many requests, how fast, how many at once.

`FixedWindowPacer` counts its own admissions in windows aligned the way the
server aligns them (`floor(now / length)`), and admits a request only while
both the burst (second) and the steady (minute) window have room, so the
server never has to refuse us for our own traffic. A window starts with our
requests still unanswered at its start, which the server may count in it
(ledger.py), however long they take to get there. What the server says wins
over what we counted: other replicas share the account, so an answer with
`X-RateLimit-Remaining: 0`, or a 429 with `Retry-After`, holds everyone back
until the server's reset. `Retry-After: -1` (Ocamba: too many requests in flight)
halves how many requests may be in flight at once; a run of good answers wins
the slots back one by one, up to `max_in_flight`.

Admission is serialised by `LaneTurns` (turns.py): one waiter at a time, the
`realtime` lane's before `bulk`'s (bulk every `share`-th turn when both wait),
arrival order within a lane; so the wait of a paced burst is counted once
(wall time the pacer held sending back), not once per waiting worker.

The steady window's budget is spread over the window (`spread`): the k-th
call of a window goes no sooner than k/limit of the way through it; behind
that pace (after a quiet spell) calls go at once until caught up. Spending a
window's budget in its first seconds would leave a real-time write that
arrives later nothing until the window ends (Ocamba: up to 45 s of its 60);
spread, the next slot is at most length/limit away (0.4 s), and the window
still takes its whole budget.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Protocol

import msgspec

from gateway.backends.base import Lane
from gateway.backends.transport.classify import TOO_MANY_IN_FLIGHT, parse_retry_after
from gateway.backends.transport.ledger import Ledger
from gateway.backends.transport.turns import LaneTurns

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
WaitObserver = Callable[[float], None]

# Sleeping exactly to a window's end can land a hair before it in floating point
# (and our clock may run slightly ahead of the server's): step just past it.
_PAST_BOUNDARY: Final = 0.001
# `X-RateLimit-Reset` is seconds in every API we talk to, but some APIs send an
# epoch timestamp there; no delta-seconds value is ever this large.
_EPOCH_THRESHOLD: Final = 1_000_000_000.0
# Reset is rounded to whole seconds by servers; a header describes our current
# window when its end is within this of our window's end.
_RESET_TOLERANCE: Final = 1.5


class PacingTimeout(Exception):
    """Admission would take longer than the caller was willing to wait."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"rate limit: next slot in {wait:.1f} s")
        self.wait = wait


class WindowHeadroom(msgspec.Struct, frozen=True):
    seconds: float  # the window's length
    limit: int
    remaining: int  # admissions left in the current window, by our count
    resets_in: float


class Headroom(msgspec.Struct, frozen=True):
    windows: list[WindowHeadroom]  # empty: no rate limit, only the in-flight cap
    blocked_for: float  # the server said wait (429, Retry-After, Remaining: 0)
    in_flight: int
    max_in_flight: int  # now: lowered after `Retry-After: -1`


class Permit:
    """One admitted request; hand it back to `release` exactly once."""

    __slots__ = ("generation", "released")

    def __init__(self, generation: int) -> None:
        # The concurrency limit's generation at admission: a request admitted
        # before the last decrease must not decrease it again (one congestion
        # event often answers several requests with -1 at once).
        self.generation = generation
        self.released = False


class Pacer(Protocol):
    async def acquire(self, max_wait: float | None = None, lane: Lane = "realtime") -> Permit:
        """Waits for a slot, real-time before bulk. Raises `PacingTimeout` rather
        than sleep longer than `max_wait` for a rate window or a server's reset."""
        ...

    def release(
        self, permit: Permit, status: int | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        """Frees the slot; `status`/`headers` of the answer, None if there was none."""
        ...


class _Window:
    """Our admissions in the current fixed window of one length.

    A new window starts with the requests that straddle its start (`Ledger`):
    let go before it, unanswered at it, so the server may count them in it."""

    def __init__(
        self,
        length: float,
        limit: int,
        spread: bool = False,
        straddling: Callable[[float], int] | None = None,
    ) -> None:
        """`spread`: the k-th admission no sooner than k/limit of the way
        through the window. `straddling(boundary)`: how many requests may be
        counted on both sides of it."""
        if length <= 0:
            raise ValueError("window length must be positive")
        if limit < 1:
            raise ValueError("a window limit must be at least 1")
        self.length = length
        self.limit = limit
        self.spread = spread
        self._straddling = straddling
        self._index: int | None = None
        self._count = 0

    def _roll(self, now: float) -> None:
        index = math.floor(now / self.length)
        if index != self._index:
            self._index = index
            start = index * self.length
            self._count = self._straddling(start) if self._straddling is not None else 0

    def count(self, now: float) -> int:
        self._roll(now)
        return self._count

    def add(self, now: float) -> None:
        self._roll(now)
        self._count += 1

    def raise_to(self, count: int, now: float) -> None:
        self._roll(now)
        self._count = max(self._count, count)

    def ends_at(self, now: float) -> float:
        return (math.floor(now / self.length) + 1) * self.length

    def wait(self, now: float) -> float:
        """0 while there is room, else seconds until the window resets or,
        spread, until the next admission's share of the window has come."""
        count = self.count(now)
        if count >= self.limit:
            return self.ends_at(now) - now
        if not self.spread:
            return 0.0
        start = self.ends_at(now) - self.length
        return max(0.0, start + count * self.length / self.limit - now)


class FixedWindowPacer:
    def __init__(
        self,
        per_second: int | None,
        per_minute: int | None,
        *,
        second_window: float = 1.0,
        minute_window: float = 60.0,
        max_in_flight: int,
        recover_after: int = 20,
        spread: bool = True,
        bulk_share: int = 5,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        on_wait: WaitObserver | None = None,
    ) -> None:
        """`spread`: spread the steady window's budget over it (see the module's
        doc); `bulk_share`: every how many turns bulk goes first when both
        lanes wait (turns.py)."""
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if recover_after < 1:
            raise ValueError("recover_after must be at least 1")
        # Spread with no burst ahead of the even pace: a burst at a window's
        # start is paid for at its end, where a real-time write then finds
        # nothing left (Ocamba: 10 at once left the window's last 4 s empty).
        # Behind the pace (after a quiet spell) calls go at once until caught up.
        self._ledger = Ledger()
        self._windows = [
            _Window(length, limit, spread and steady, self._ledger.straddling)
            for length, limit, steady in (
                (second_window, per_second, False),
                (minute_window, per_minute, True),
            )
            if limit is not None
        ]
        # No window (only the cap on requests in flight): keep no answers.
        self._ledger.horizon = max((w.length for w in self._windows), default=0.0)
        self.max_in_flight = max_in_flight
        self._recover_after = recover_after
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait
        self._turns = LaneTurns(bulk_share)
        self._slot_freed = asyncio.Event()
        self._limit = max_in_flight
        self._in_flight = 0
        self._generation = 0
        self._good_answers = 0
        self._blocked_until = 0.0
        self.waited = 0.0  # seconds slept for windows, resets and Retry-After

    @property
    def limit(self) -> int:
        """How many requests may be in flight at once right now."""
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def headroom(self) -> Headroom:
        """What is left of each window now, for the operator page; changes nothing
        a later `acquire` would not."""
        now = self._clock()
        windows = [
            WindowHeadroom(
                seconds=w.length,
                limit=w.limit,
                remaining=max(0, w.limit - w.count(now)),
                resets_in=w.ends_at(now) - now,
            )
            for w in self._windows
        ]
        return Headroom(
            windows=windows,
            blocked_for=max(0.0, self._blocked_until - now),
            in_flight=self._in_flight,
            max_in_flight=self._limit,
        )

    async def acquire(self, max_wait: float | None = None, lane: Lane = "realtime") -> Permit:
        deadline = None if max_wait is None else self._clock() + max_wait
        await self._turns.acquire(lane)
        try:
            while True:
                now = self._clock()
                wait = self._wait(now)
                if wait > 0:
                    if deadline is not None and now + wait > deadline:
                        raise PacingTimeout(wait)
                    await self._sleep(wait + _PAST_BOUNDARY)
                    self._count_wait(self._clock() - now)
                    continue
                if self._in_flight >= self._limit:
                    # Not counted as a rate-limit wait: this is our own cap, and
                    # counting it would make the metric grow with ordinary load.
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                for window in self._windows:
                    window.add(now)
                self._in_flight += 1
                permit = Permit(self._generation)
                self._ledger.open(permit, now)
                return permit
        finally:
            self._turns.release()

    def release(
        self, permit: Permit, status: int | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        if permit.released:
            raise RuntimeError("permit released twice")
        permit.released = True
        self._in_flight -= 1
        self._ledger.close(permit, self._clock())
        if status is not None:
            self._observe(permit, status, headers or {})
        self._slot_freed.set()

    def _wait(self, now: float) -> float:
        waits = [window.wait(now) for window in self._windows]
        waits.append(self._blocked_until - now)
        return max(0.0, *waits)

    def _count_wait(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.waited += seconds
        if self._on_wait is not None:
            self._on_wait(seconds)

    def _block_for(self, seconds: float, now: float) -> None:
        self._blocked_until = max(self._blocked_until, now + seconds)

    def _observe(self, permit: Permit, status: int, headers: Mapping[str, str]) -> None:
        now = self._clock()
        lowered = {key.lower(): value for key, value in headers.items()}
        self._read_rate_headers(lowered, now)
        if status == 429:
            self._good_answers = 0
            retry_after = parse_retry_after(lowered.get("retry-after"), now=self._clock)
            if retry_after == TOO_MANY_IN_FLIGHT:
                if permit.generation == self._generation and self._limit > 1:
                    self._limit = max(1, self._limit // 2)
                    self._generation += 1
            elif retry_after is None:
                # A 429 without a hint: give the shortest window a chance to reset.
                self._block_for(min((w.length for w in self._windows), default=1.0), now)
            else:
                self._block_for(retry_after, now)
        elif status == 503:
            # "Unavailable, come back in N s" concerns every request alike.
            retry_after = parse_retry_after(lowered.get("retry-after"), now=self._clock)
            if retry_after is not None and retry_after > 0:
                self._block_for(retry_after, now)
        elif status < 500:
            # 5xx says nothing about concurrency either way; anything else the
            # server answered without throttling counts towards recovery.
            self._good_answers += 1
            if self._good_answers >= self._recover_after and self._limit < self.max_in_flight:
                self._limit += 1
                self._good_answers = 0
                self._slot_freed.set()

    def _read_rate_headers(self, headers: Mapping[str, str], now: float) -> None:
        remaining = _number(headers.get("x-ratelimit-remaining"))
        reset = _number(headers.get("x-ratelimit-reset"))
        if remaining is None or reset is None:
            return
        reset_in = reset - now if reset >= _EPOCH_THRESHOLD else reset
        if reset_in <= 0:
            return
        if remaining <= 0:
            # The account is spent, whatever our own count says (other replicas).
            self._block_for(reset_in, now)
            return
        limit = _number(headers.get("x-ratelimit-limit"))
        if limit is None:
            return
        for window in self._windows:
            # Catch up with what the account used in this window (other replicas):
            # only for the window the header describes, and only if it is ours.
            if window.limit == limit and (
                abs(now + reset_in - window.ends_at(now)) <= _RESET_TOLERANCE
            ):
                window.raise_to(int(limit - remaining), now)


def optional_pacer(
    per_second: int,
    per_minute: int,
    max_in_flight: int,
    *,
    bulk_share: int = 5,
    clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
    on_wait: WaitObserver | None = None,
) -> FixedWindowPacer:
    """For a backend that documents no rate limit: windows only where configured
    (0 = none), always a cap on requests in flight, and a 429 or an exhausted
    `X-RateLimit-Remaining` still obeyed."""
    return FixedWindowPacer(
        per_second or None,
        per_minute or None,
        max_in_flight=max_in_flight,
        bulk_share=bulk_share,
        clock=clock,
        sleep=sleep,
        on_wait=on_wait,
    )


def unlimited_pacer(
    max_in_flight: int,
    *,
    clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
    on_wait: WaitObserver | None = None,
) -> FixedWindowPacer:
    """Only the cap on requests in flight."""
    return optional_pacer(0, 0, max_in_flight, clock=clock, sleep=sleep, on_wait=on_wait)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
