"""What an HTTP answer says about trying again: its status and its `Retry-After`.

Both read the server's answer only, so they belong to the transport; when to
try again (the backoff schedule) is the dispatcher's policy, in
`gateway.dispatch.retry`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import time
from collections.abc import Callable
from typing import Final, Literal

Classification = Literal["transient", "permanent"]

# Ocamba answers `Retry-After: -1` when the account has too many requests in
# flight. Waiting cannot help with that, sending fewer at once can, so it gets
# a value no real delay can have and the pacer reacts to it instead of sleeping.
TOO_MANY_IN_FLIGHT: Final[float] = -1.0

# 501 (Not Implemented) and 505 (HTTP Version Not Supported) describe the
# request, not the server's health: a retry gets the same answer.
_PERMANENT_5XX: Final = frozenset({501, 505})


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
