from __future__ import annotations

import random

import pytest

from gateway.config import Settings
from gateway.dispatch.retry import (
    TOO_MANY_IN_FLIGHT,
    RetryPolicy,
    classify,
    parse_retry_after,
)


class TopOfRange(random.Random):
    """Always draws the top of the range asked for, exposing the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


class BottomOfRange(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


POLICY = RetryPolicy(base=1.0, cap=300.0, max_attempts=8)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 507, 599])
def test_transient_statuses(status: int) -> None:
    assert classify(status) == "transient"


@pytest.mark.parametrize("status", [300, 400, 401, 403, 404, 409, 410, 413, 422, 451, 501, 505])
def test_permanent_statuses(status: int) -> None:
    assert classify(status) == "permanent"


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


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        (" 12 ", 12.0),
        ("0.25", 0.25),
        ("0", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_in_flight_signal_is_distinct() -> None:
    value = parse_retry_after("-1")
    assert value == TOO_MANY_IN_FLIGHT
    assert value is not None and value < 0


def test_parse_retry_after_http_date() -> None:
    # Wed, 21 Oct 2015 07:28:00 GMT
    at = 1445412480.0
    header = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(header, now=lambda: at - 90) == pytest.approx(90.0)
    assert parse_retry_after(header, now=lambda: at + 5) == 0.0
