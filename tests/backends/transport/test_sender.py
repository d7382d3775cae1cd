from __future__ import annotations

import logging

import httpx
import msgspec
import pytest

from gateway.backends.base import NotSent, PermanentError, TransientError
from gateway.backends.transport import sender as transport_sender
from gateway.backends.transport.pacing import FixedWindowPacer, unlimited_pacer
from gateway.backends.transport.sender import HttpSender
from tests.backends.fakes import Backend
from tests.dispatch.fakes import FakeClock

pytestmark = pytest.mark.anyio

OCAMBA_400 = {
    "code": 400,
    "title": "Bad request.",
    "message": "The request is not valid.",
    "trace_id": "99a84211-f73d-4ff8-acdf-eb3e06bb9d62",
}
SECRET_BODY = {"email": "jane@example.com", "mobile_phone_number": "+49234432234"}


def make_sender(
    backend: Backend,
    *,
    pacer: FixedWindowPacer | None = None,
    calls: list[tuple[str, str, float]] | None = None,
    max_wait: float | None = None,
) -> HttpSender:
    def on_call(endpoint: str, status: str, seconds: float) -> None:
        if calls is not None:
            calls.append((endpoint, status, seconds))

    return HttpSender(
        "ocamba",
        backend.client(),
        "http://ocamba.test/api/",
        pacer=pacer or unlimited_pacer(2),
        timeout=3.0,
        headers={"Authorization": "Bearer tok"},
        max_wait=max_wait,
        on_call=on_call,
    )


async def test_posts_json_to_base_url_plus_path_with_default_headers() -> None:
    backend = Backend(lambda r: httpx.Response(201, json={"id": "17"}))
    calls: list[tuple[str, str, float]] = []
    sender = make_sender(backend, calls=calls)

    response = await sender.post(
        "create", "/v1/hood/profiles", json=SECRET_BODY, headers={"X-Extra": "1"}
    )

    assert response.status_code == 201
    (request,) = backend.requests
    assert str(request.url) == "http://ocamba.test/api/v1/hood/profiles"
    assert request.headers["authorization"] == "Bearer tok"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-extra"] == "1"
    assert msgspec.json.decode(request.content) == SECRET_BODY
    assert [(e, s) for e, s, _ in calls] == [("create", "201")]
    assert calls[0][2] >= 0


async def test_4xx_is_permanent_with_the_vendors_message_and_no_request_data() -> None:
    backend = Backend(lambda r: httpx.Response(400, json=OCAMBA_400))
    calls: list[tuple[str, str, float]] = []
    pacer = unlimited_pacer(2)
    sender = make_sender(backend, calls=calls, pacer=pacer)

    with pytest.raises(PermanentError) as caught:
        await sender.post("create", "/v1/hood/profiles", json=SECRET_BODY)

    assert str(caught.value) == "ocamba create: HTTP 400: The request is not valid."
    assert caught.value.status == 400
    assert "jane@example.com" not in str(caught.value)
    assert "+49234432234" not in str(caught.value)
    assert [(e, s) for e, s, _ in calls] == [("create", "400")]
    assert pacer.in_flight == 0


async def test_error_without_a_message_uses_the_reason_phrase() -> None:
    backend = Backend(lambda r: httpx.Response(500, json={"code": 500, "title": ""}))
    with pytest.raises(TransientError) as caught:
        await make_sender(backend).post("import", "/x", json={})
    assert str(caught.value) == "ocamba import: HTTP 500: Internal Server Error"


async def test_a_long_html_error_page_is_cut_short() -> None:
    backend = Backend(lambda r: httpx.Response(502, text="<html>" + "x" * 5000))
    with pytest.raises(TransientError) as caught:
        await make_sender(backend).post("import", "/x", json={})
    assert str(caught.value) == "ocamba import: HTTP 502: Bad Gateway"


async def test_5xx_is_transient_with_retry_after() -> None:
    backend = Backend(
        lambda r: httpx.Response(503, json={"message": "down"}, headers={"Retry-After": "7"})
    )
    with pytest.raises(TransientError) as caught:
        await make_sender(backend).post("create", "/x", json={})
    assert caught.value.status == 503
    assert caught.value.retry_after == 7.0
    assert str(caught.value) == "ocamba create: HTTP 503: down"
    assert caught.value.unavailable  # the circuit breaker counts it


async def test_429_is_transient_but_says_the_backend_is_up() -> None:
    backend = Backend(lambda r: httpx.Response(429, headers={"Retry-After": "2"}))
    with pytest.raises(TransientError) as caught:
        await make_sender(backend).post("create", "/x", json={})
    assert caught.value.retry_after == 2.0
    assert not caught.value.unavailable


@pytest.mark.parametrize("status", [501, 505])
async def test_501_and_505_are_permanent(status: int) -> None:
    backend = Backend(lambda r: httpx.Response(status))
    with pytest.raises(PermanentError):
        await make_sender(backend).post("create", "/x", json={})


async def test_429_in_flight_lowers_the_pacers_concurrency_without_a_wait() -> None:
    clock = FakeClock()
    pacer = FixedWindowPacer(10, 150, max_in_flight=4, clock=clock, sleep=clock.sleep)
    backend = Backend(
        lambda r: httpx.Response(
            429,
            json={"code": 429, "message": "Rate limit exceeded."},
            headers={"Retry-After": "-1"},
        )
    )
    with pytest.raises(TransientError) as caught:
        await make_sender(backend, pacer=pacer).post("create", "/x", json={})

    assert caught.value.retry_after is None
    assert "too many requests in flight" in str(caught.value)
    assert pacer.limit == 2


async def test_timeout_is_transient_and_observed() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    calls: list[tuple[str, str, float]] = []
    pacer = unlimited_pacer(2)
    with pytest.raises(TransientError) as caught:
        await make_sender(Backend(hang), calls=calls, pacer=pacer).post("import", "/x", json={})

    assert caught.value.status is None
    assert str(caught.value) == "ocamba import: no answer within 3 s (ReadTimeout)"
    assert caught.value.unavailable
    assert [(e, s) for e, s, _ in calls] == [("import", "timeout")]
    assert pacer.in_flight == 0


async def test_connection_error_is_transient_and_observed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    calls: list[tuple[str, str, float]] = []
    with pytest.raises(TransientError) as caught:
        await make_sender(Backend(refuse), calls=calls).post("create", "/x", json={})
    assert str(caught.value) == "ocamba create: cannot connect"
    assert caught.value.unavailable
    assert [(e, s) for e, s, _ in calls] == [("create", "error")]


async def test_a_long_pacing_wait_is_handed_back_without_sending() -> None:
    clock = FakeClock(start=0.0)
    pacer = FixedWindowPacer(1, 100, max_in_flight=1, clock=clock, sleep=clock.sleep)
    backend = Backend(lambda r: httpx.Response(202, json={}))
    sender = make_sender(backend, pacer=pacer, max_wait=0.5)
    await sender.post("import", "/x", json={})

    with pytest.raises(NotSent) as caught:
        await sender.post("import", "/x", json={})

    assert len(backend.requests) == 1
    assert caught.value.retry_after == pytest.approx(1.0)
    assert str(caught.value).startswith("ocamba import: not sent: rate limit")
    assert not caught.value.unavailable  # our own pacing, not the backend's health
    assert pacer.in_flight == 0


async def test_server_rate_headers_reach_the_pacer() -> None:
    clock = FakeClock(start=50.0)
    pacer = FixedWindowPacer(10, 150, max_in_flight=4, clock=clock, sleep=clock.sleep)
    backend = Backend(
        lambda r: httpx.Response(
            202, json={}, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "10"}
        )
    )
    sender = make_sender(backend, pacer=pacer)
    await sender.post("import", "/x", json={})
    await sender.post("import", "/x", json={})
    assert clock.now >= 60.0


def _not_found_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gateway.backends.http" and "404" in r.message]


async def test_a_404_logs_once_per_backend_that_the_base_url_is_probably_wrong(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_sender, "_NOT_FOUND_LOGGED", set())
    backend = Backend(lambda r: httpx.Response(404, text="Not Found"))
    omneo = HttpSender(
        "omneo", backend.client(), "https://tenant.example", pacer=unlimited_pacer(2), timeout=3.0
    )
    ocamba = make_sender(backend)
    caplog.set_level(logging.INFO, logger="gateway.backends.http")

    for _ in range(3):
        with pytest.raises(PermanentError) as raised:
            await omneo.post("batch", "/v3/profiles/batch", json=SECRET_BODY)
        assert raised.value.status == 404
    with pytest.raises(PermanentError):
        await ocamba.post("create", "/v1/hood/profiles", json=SECRET_BODY)

    lines = _not_found_lines(caplog)
    assert [(r.levelno, r.__dict__["backend"], r.__dict__["url_path"]) for r in lines] == [
        (logging.WARNING, "omneo", "/v3/profiles/batch"),
        (logging.WARNING, "ocamba", "/api/v1/hood/profiles"),
    ]
    assert "base URL is probably wrong" in lines[0].getMessage()
    assert lines[0].__dict__["endpoint"] == "batch"


async def test_other_refusals_do_not_blame_the_base_url(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_sender, "_NOT_FOUND_LOGGED", set())
    sender = make_sender(Backend(lambda r: httpx.Response(400, json=OCAMBA_400)))
    caplog.set_level(logging.INFO, logger="gateway.backends.http")
    with pytest.raises(PermanentError):
        await sender.post("create", "/v1/hood/profiles", json=SECRET_BODY)
    assert _not_found_lines(caplog) == []
