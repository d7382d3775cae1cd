from __future__ import annotations

import random

import pytest

from gateway.backends.transport.classify import TOO_MANY_IN_FLIGHT
from gateway.config import Settings
from gateway.dispatch.retry import RetryPolicy


class TopOfRange(random.Random):
    """Always draws the top of the range asked for, exposing the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


class BottomOfRange(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


POLICY = RetryPolicy(base=1.0, cap=300.0, max_attempts=8)


def test_policy_comes_from_settings() -> None:
    settings = Settings(retry_base=0.5, retry_cap=60.0, max_attempts=5)
    assert RetryPolicy.from_settings(settings) == RetryPolicy(base=0.5, cap=60.0, max_attempts=5)


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (8, 128.0), (9, 256.0), (10, 300.0), (40, 300.0), (500, 300.0)],
)
def test_ceiling_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    assert POLICY.delay(attempt, None, TopOfRange()) == ceiling
    assert POLICY.delay(attempt, None, BottomOfRange()) == 0.0


def test_full_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(7)
    delays = [POLICY.delay(4, None, rng) for _ in range(2_000)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    # Full jitter: both ends of [0, 8] are reached, not a narrow band around 8.
    assert min(delays) < 0.1
    assert max(delays) > 7.9
    assert 3.5 < sum(delays) / len(delays) < 4.5


def test_retry_after_is_a_floor() -> None:
    assert POLICY.delay(1, 30.0, TopOfRange()) == 30.0
    assert POLICY.delay(1, 30.0, BottomOfRange()) == 30.0


def test_jitter_above_retry_after_wins() -> None:
    assert POLICY.delay(6, 2.0, TopOfRange()) == 32.0


def test_too_many_in_flight_is_no_floor() -> None:
    assert POLICY.delay(3, TOO_MANY_IN_FLIGHT, BottomOfRange()) == 0.0


def test_exhausted_after_max_attempts() -> None:
    assert not POLICY.exhausted(1)
    assert not POLICY.exhausted(7)
    assert POLICY.exhausted(8)
    assert POLICY.exhausted(9)
