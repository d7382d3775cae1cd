"""`HttpSender`: the one way adapters reach the network.

Paced (a `Pacer` per backend account), timed, and classified: the caller gets a
2xx `httpx.Response` or a `TransientError` / `PermanentError` whose message a
person can read in the delivery's `last_error`. The request body never appears
in a message or a log line: it holds email addresses and phone numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import msgspec

from gateway import tracing
from gateway.backends.base import Lane, NotSent, PermanentError, TransientError
from gateway.backends.transport.classify import TOO_MANY_IN_FLIGHT, classify, parse_retry_after
from gateway.backends.transport.pacing import Pacer, PacingTimeout, Permit

# The name it had before the transport got its own package: operators filter
# and alert on the JSON logs' "logger" field, so moving the module keeps it.
log = logging.getLogger("gateway.backends.http")

# (endpoint, status, seconds): status is the HTTP code as text, "timeout" or "error".
CallObserver = Callable[[str, str, float], None]

# A vendor's error text is worth showing; a whole HTML error page is not.
_MAX_VENDOR_MESSAGE: Final = 300
_MAX_FIELD_ERRORS: Final = 3
# Keys vendors put a human-readable reason under, most specific first.
_MESSAGE_KEYS: Final = ("message", "error_text", "error_description", "detail", "error", "title")
# Backends whose 404 was logged in this process. A wrong base URL fails every
# delivery with the same 404; one line says what to fix without a flood.
_NOT_FOUND_LOGGED: set[str] = set()


class HttpSender:
    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        pacer: Pacer,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        max_wait: float | None = None,
        on_call: CallObserver | None = None,
    ) -> None:
        """`name` prefixes every error ("ocamba create: ..."). `max_wait` bounds how
        long one call may wait for the pacer; beyond it the call is not made and a
        `TransientError` carries the wait as `retry_after`, so the dispatcher can
        park the delivery instead of a worker holding its lease while it sleeps."""
        self.name = name
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._pacer = pacer
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._max_wait = max_wait
        self._on_call = on_call

    async def post(
        self,
        endpoint: str,
        path: str,
        *,
        json: Any,
        headers: Mapping[str, str] | None = None,
        lane: Lane = "realtime",
    ) -> httpx.Response:
        label = f"{self.name} {endpoint}"
        content = msgspec.json.encode(json)
        try:
            permit = await self._pacer.acquire(self._max_wait, lane)
        except PacingTimeout as exc:
            raise NotSent(f"{label}: not sent: {exc}", retry_after=exc.wait) from None
        # The call itself, not its wait for the pacer; the backend and endpoint
        # names only: the URL's query, the body and the headers stay out.
        attrs = {"gateway.backend": self.name, "gateway.endpoint": endpoint}
        with tracing.span("backend.send", attrs, kind="client") as span:
            return await self._send(span, endpoint, path, label, content, headers, permit)

    async def _send(
        self,
        span: tracing.Handle,
        endpoint: str,
        path: str,
        label: str,
        content: bytes,
        headers: Mapping[str, str] | None,
        permit: Permit,
    ) -> httpx.Response:
        status: int | None = None
        response_headers: Mapping[str, str] | None = None
        started = time.perf_counter()
        try:
            response = await self._client.post(
                self._base_url + path,
                content=content,
                headers={**self._headers, **(headers or {})},
                timeout=self._timeout,
            )
            # The body is read here so that a body that never finishes counts as
            # a timeout of this call, not a crash in the adapter.
            await response.aread()
        except httpx.TimeoutException as exc:
            self._observe(endpoint, "timeout", started)
            span.fail("timeout")
            raise TransientError(
                f"{label}: no answer within {self._timeout:g} s ({type(exc).__name__})",
                unavailable=True,
            ) from None
        except httpx.HTTPError as exc:
            self._observe(endpoint, "error", started)
            span.fail(type(exc).__name__)
            raise TransientError(
                f"{label}: {_describe_transport_error(exc)}", unavailable=True
            ) from None
        else:
            status = response.status_code
            response_headers = response.headers
            self._observe(endpoint, str(status), started)
        finally:
            self._pacer.release(permit, status, response_headers)

        span.set("http.response.status_code", status)
        if 200 <= status <= 299:
            return response
        span.fail(str(status))
        if status == 404:
            self._log_not_found(endpoint, path)
        message = f"{label}: HTTP {status}: {vendor_message(response)}"
        if classify(status) == "permanent":
            raise PermanentError(message, status=status)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after == TOO_MANY_IN_FLIGHT:
            # The pacer has already lowered concurrency; nothing to wait for.
            message += " (too many requests in flight)"
            retry_after = None
        # A 429 or 408 means the backend is up and answering; a 5xx means it is not.
        raise TransientError(
            message, status=status, retry_after=retry_after, unavailable=status >= 500
        )

    def _log_not_found(self, endpoint: str, path: str) -> None:
        if self.name in _NOT_FOUND_LOGGED:
            return
        _NOT_FOUND_LOGGED.add(self.name)
        # The path only: the base URL's host is the operator's to read, and
        # neither carries personal data.
        log.warning(
            "backend answered 404 on its API path: its base URL is probably wrong"
            " (Omneo's and import_batch's documented bases end in /api)",
            extra={
                "backend": self.name,
                "endpoint": endpoint,
                "url_path": urlsplit(self._base_url + path).path,
            },
        )

    def _observe(self, endpoint: str, status: str, started: float) -> None:
        if self._on_call is not None:
            self._on_call(endpoint, status, time.perf_counter() - started)


def vendor_message(response: httpx.Response) -> str:
    """The vendor's own words for an error answer, or the reason phrase."""
    text = _message_from_body(response.content)
    if not text:
        text = response.reason_phrase or "no message"
    text = " ".join(text.split())
    if len(text) > _MAX_VENDOR_MESSAGE:
        text = text[: _MAX_VENDOR_MESSAGE - 1] + "…"
    return text


def _message_from_body(content: bytes) -> str | None:
    if not content:
        return None
    try:
        body = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None
    message = _find_message(body)
    details = _field_errors(body)
    if message and details:
        return f"{message} ({details})"
    return message or details


def _field_errors(body: Any) -> str | None:
    """Laravel-style `{"errors": {"profiles.3.email": ["..."]}}`: the generic
    message alone ("The given data was invalid.") does not say what to fix.
    These name fields, never their values."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, dict):
        return None
    messages = [
        text
        for texts in errors.values()
        for text in (texts if isinstance(texts, list) else [texts])
        if isinstance(text, str)
    ]
    if not messages:
        return None
    more = len(messages) - _MAX_FIELD_ERRORS
    shown = "; ".join(messages[:_MAX_FIELD_ERRORS])
    return shown + (f"; and {more} more" if more > 0 else "")


def _find_message(body: Any) -> str | None:
    if isinstance(body, str):
        return body or None
    if not isinstance(body, dict):
        return None
    for key in _MESSAGE_KEYS:
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, dict):
            # {"error": {"message": ...}} and similar envelopes.
            nested = _find_message(value)
            if nested:
                return nested
    return None


def _describe_transport_error(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection broke off mid-answer"
    return f"transport error ({type(exc).__name__})"
