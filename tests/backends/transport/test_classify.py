from __future__ import annotations

import pytest

from gateway.backends.transport.classify import TOO_MANY_IN_FLIGHT, classify, parse_retry_after


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 507, 599])
def test_transient_statuses(status: int) -> None:
    assert classify(status) == "transient"


@pytest.mark.parametrize("status", [300, 400, 401, 403, 404, 409, 410, 413, 422, 451, 501, 505])
def test_permanent_statuses(status: int) -> None:
    assert classify(status) == "permanent"


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
