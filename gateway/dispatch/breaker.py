"""A circuit breaker per backend: stop sending to a backend that is down.

Without it, every worker of a dead backend keeps claiming batches, sending them
into connection errors and 503s, and spending the deliveries' attempts until
they end `dead`. With it:

- **closed**: batches flow. `failures` batches in a row that found the backend
  down (no connection, no answer in time, a 5xx) open the circuit. A 429 or a
  per-profile refusal is an answer: the backend is up, and the count restarts.
- **open**: nothing is claimed for `cooldown` seconds. Each reopening doubles
  the cooldown up to `max_cooldown`, drawn between half and all of it, so
  replicas that opened together do not probe together.
- **half-open**: exactly one batch, the probe, goes out. An answer closes the
  circuit; the backend still down reopens it; a probe that never reached the
  backend (nothing due, our own pacing) frees the slot for another.

Pure logic on an injected clock: the dispatcher asks and reports, tests step time.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Sequence
from typing import Final, Literal

import msgspec

from gateway.backends.base import Outcome


class CircuitState(enum.IntEnum):
    # The values are the `gateway_circuit_state` gauge's encoding.
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


# What one batch said about the backend: `up` (it answered, whatever it said),
# `down` (it could not be reached or answered 5xx), `none` (nothing reached it).
Verdict = Literal["up", "down", "none"]

# Doubling past this many reopenings changes nothing once capped, and keeps
# 2**n far from overflowing.
_MAX_EXPONENT: Final = 32


class Permit(msgspec.Struct, frozen=True):
    """Leave to send one batch. `epoch` ties its verdict to the circuit it was
    given under: a batch sent before the circuit changed says nothing about now."""

    epoch: int
    probe: bool = False


Transition = Callable[[CircuitState, CircuitState], None]


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int,
        cooldown: float,
        max_cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_transition: Transition | None = None,
    ) -> None:
        """`failures` <= 0 turns the breaker off: it never opens."""
        self.failures = failures
        self.cooldown = cooldown
        self.max_cooldown = max(max_cooldown, cooldown)
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_transition = on_transition
        self._state = CircuitState.CLOSED
        self._epoch = 0
        self._streak = 0  # batches in a row that found the backend down
        self._reopenings = 0  # failed probes since the circuit last closed
        self._probe_at = 0.0  # when an open circuit lets a probe through
        self._probing = False  # a half-open circuit's probe is out

    @property
    def state(self) -> CircuitState:
        return self._state

    def acquire(self) -> Permit | None:
        """A permit to claim and send one batch, or None: wait (`wait_time`)."""
        if self._state is CircuitState.CLOSED:
            return Permit(self._epoch)
        if self._state is CircuitState.OPEN:
            if self._clock() < self._probe_at:
                return None
            self._move(CircuitState.HALF_OPEN)
        if self._probing:
            return None
        self._probing = True
        return Permit(self._epoch, probe=True)

    def wait_time(self) -> float | None:
        """Seconds until `acquire` can give a permit; None while that depends
        on a probe under way."""
        if self._state is CircuitState.CLOSED:
            return 0.0
        if self._state is CircuitState.OPEN:
            return max(0.0, self._probe_at - self._clock())
        return None if self._probing else 0.0

    def record(self, permit: Permit, verdict: Verdict) -> None:
        """What the batch sent under `permit` found."""
        if permit.epoch != self._epoch:
            return  # sent under a circuit that has changed since
        if self._state is CircuitState.CLOSED:
            if verdict == "up":
                self._streak = 0
            elif verdict == "down":
                self._streak += 1
                if 0 < self.failures <= self._streak:
                    self._open()
            return
        # Half-open: the only current permit is the probe's.
        self._probing = False
        if verdict == "up":
            self._reopenings = 0
            self._streak = 0
            self._move(CircuitState.CLOSED)
        elif verdict == "down":
            self._reopenings += 1
            self._open()

    def release(self, permit: Permit) -> None:
        """The permit was not used to reach the backend (nothing to send)."""
        self.record(permit, "none")

    def _open(self) -> None:
        ceiling = self.cooldown * 2.0 ** min(self._reopenings, _MAX_EXPONENT)
        ceiling = min(ceiling, self.max_cooldown)
        self._probe_at = self._clock() + self._rng.uniform(ceiling / 2, ceiling)
        self._move(CircuitState.OPEN)

    def _move(self, to: CircuitState) -> None:
        before = self._state
        self._state = to
        self._epoch += 1
        if self._on_transition is not None:
            self._on_transition(before, to)


def verdict_of(outcomes: Sequence[Outcome]) -> Verdict:
    """What a batch's outcomes say about its backend. Any item that found it
    down outweighs the rest (it went down mid-batch); any other item that was
    sent means it answered. An empty or wholly unsent batch says nothing.
    (A batch that fails every profile locally counts as an answer: rare, and
    at worst the circuit closes early and reopens after `failures` batches.)"""
    if any(o.state == "retry" and o.unavailable for o in outcomes):
        return "down"
    if any(o.sent for o in outcomes):
        return "up"
    return "none"
