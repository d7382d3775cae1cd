"""The circuit breaker's states, on a clock the tests step by hand."""

from __future__ import annotations

import random

import pytest

from gateway.backends.base import Outcome
from gateway.clock import FakeClock
from gateway.dispatch.breaker import CircuitBreaker, CircuitState, Permit, verdict_of

CLOSED, HALF_OPEN, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN


class Moves(list[tuple[CircuitState, CircuitState]]):
    """The transitions a breaker reported, in order."""


def breaker(
    clock: FakeClock,
    transitions: list[tuple[CircuitState, CircuitState]] | None = None,
    *,
    failures: int = 3,
    cooldown: float = 1.0,
    max_cooldown: float = 30.0,
    seed: int = 1,
) -> CircuitBreaker:
    def moved(before: CircuitState, to: CircuitState) -> None:
        if transitions is not None:
            transitions.append((before, to))

    return CircuitBreaker(
        failures=failures,
        cooldown=cooldown,
        max_cooldown=max_cooldown,
        clock=clock.monotonic,
        rng=random.Random(seed),
        on_transition=moved,
    )


def permit(b: CircuitBreaker) -> Permit:
    got = b.acquire()
    assert got is not None
    return got


def fail(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.record(permit(b), "down")


def probe_after_cooldown(b: CircuitBreaker, clock: FakeClock) -> Permit:
    wait = b.wait_time()
    assert wait is not None and wait > 0
    clock.advance(wait)
    return permit(b)


def test_consecutive_down_batches_open_the_circuit() -> None:
    clock, moves = FakeClock(), Moves()
    b = breaker(clock, moves)
    fail(b, 2)
    assert b.state is CLOSED and b.acquire() is not None
    fail(b)
    assert b.state is OPEN
    assert moves == [(CLOSED, OPEN)]
    assert b.acquire() is None  # nothing is claimed while open


def test_an_answer_in_between_restarts_the_count() -> None:
    b = breaker(FakeClock())
    fail(b, 2)
    b.record(permit(b), "up")
    fail(b, 2)
    assert b.state is CLOSED
    fail(b)
    assert b.state is OPEN


def test_batches_that_reached_nothing_neither_count_nor_reset() -> None:
    b = breaker(FakeClock())
    fail(b, 2)
    b.record(permit(b), "none")  # e.g. our own pacing handed the batch back
    assert b.state is CLOSED
    fail(b)
    assert b.state is OPEN


def test_after_the_cooldown_exactly_one_probe_goes_out() -> None:
    clock, moves = FakeClock(), Moves()
    b = breaker(clock, moves, cooldown=2.0)
    fail(b, 3)
    wait = b.wait_time()
    assert wait is not None and 1.0 <= wait <= 2.0  # half to all of the cooldown
    clock.advance(wait - 0.01)
    assert b.acquire() is None and b.state is OPEN
    clock.advance(0.01)
    probe = permit(b)
    assert probe.probe and b.state is HALF_OPEN
    # Every other worker waits for the probe's verdict.
    assert b.acquire() is None and b.acquire() is None
    assert b.wait_time() is None
    assert moves == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_a_good_probe_closes_the_circuit() -> None:
    clock, moves = FakeClock(), Moves()
    b = breaker(clock, moves)
    fail(b, 3)
    b.record(probe_after_cooldown(b, clock), "up")
    assert b.state is CLOSED
    assert moves[-1] == (HALF_OPEN, CLOSED)
    assert not permit(b).probe and not permit(b).probe  # everyone sends again


def test_a_failed_probe_reopens_with_a_cooldown_that_doubles_up_to_the_max() -> None:
    clock = FakeClock()
    b = breaker(clock, cooldown=1.0, max_cooldown=8.0)
    fail(b, 3)
    waits = []
    for _ in range(7):
        wait = b.wait_time()
        assert wait is not None
        waits.append(wait)
        clock.advance(wait)
        b.record(permit(b), "down")
        assert b.state is OPEN
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    for wait, ceiling in zip(waits, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling
    assert sum(waits[:3]) < sum(waits[3:6])  # it grew


def test_the_cooldown_starts_small_again_after_a_recovery() -> None:
    clock = FakeClock()
    b = breaker(clock, cooldown=1.0, max_cooldown=30.0)
    fail(b, 3)
    for _ in range(5):
        clock.advance(b.wait_time() or 0.0)
        b.record(permit(b), "down")
    b.record(probe_after_cooldown(b, clock), "up")
    fail(b, 3)
    wait = b.wait_time()
    assert wait is not None and wait <= 1.0


def test_jitter_spreads_the_probes_of_breakers_that_opened_together() -> None:
    waits = set()
    for seed in range(10):
        b = breaker(FakeClock(), seed=seed, cooldown=10.0)
        fail(b, 3)
        waits.add(b.wait_time())
    assert len(waits) == 10


def test_a_probe_that_reached_nothing_frees_the_slot_for_another() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    b.release(probe_after_cooldown(b, clock))  # nothing was due
    assert b.state is HALF_OPEN
    assert permit(b).probe


def test_a_batch_sent_before_the_circuit_changed_is_ignored() -> None:
    clock = FakeClock()
    b = breaker(clock)
    slow = permit(b)  # out when the circuit opens, and answers late
    fail(b, 3)
    probe = probe_after_cooldown(b, clock)
    b.record(slow, "down")
    assert b.state is HALF_OPEN  # the late failure is not the probe's
    b.record(probe, "up")
    b.record(slow, "down")
    assert b.state is CLOSED


def test_failures_zero_turns_the_breaker_off() -> None:
    b = breaker(FakeClock(), failures=0)
    fail(b, 100)
    assert b.state is CLOSED


@pytest.mark.parametrize(
    ("outcomes", "verdict"),
    [
        # Unreachable, timed out or 5xx on any item: the backend is down.
        ([Outcome(1, "confirmed"), Outcome(2, "retry", "503", unavailable=True)], "down"),
        # A 429 is an answer: busy, not down.
        ([Outcome(1, "retry", "429", retry_after=1.0)], "up"),
        # Per-profile refusals are answers too.
        ([Outcome(1, "failed", "invalid email"), Outcome(2, "accepted")], "up"),
        # Handed back by our own pacing: the backend was never asked.
        ([Outcome(1, "retry", "not sent", sent=False)], "none"),
        ([], "none"),
    ],
)
def test_what_a_batch_says_about_its_backend(outcomes: list[Outcome], verdict: str) -> None:
    assert verdict_of(outcomes) == verdict
