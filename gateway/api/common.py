"""What every API module shares: the app context, errors, auth, body reading."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.auth.throttle import AuthThrottle
from gateway.auth.tokens import Caller, Scope
from gateway.config import Settings
from gateway.mapping.model import Mappings
from gateway.metrics import Metrics
from gateway.quotas import AppQuotas
from gateway.schema import Backend, ErrorBody, FieldError, Lane
from gateway.store.base import Store

if TYPE_CHECKING:
    from gateway.backends.transport.pacing import FixedWindowPacer
    from gateway.dispatch.breaker import CircuitBreaker

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class Context:
    """What handlers may reach: set once on `app.state.ctx` by `create_app`."""

    def __init__(
        self, settings: Settings, store: Store, metrics: Metrics, mapping: Mappings | None = None
    ) -> None:
        self.settings = settings
        # What each backend gets (GATEWAY_MAPPING_FILE, checked before this is built).
        self.mapping = mapping or Mappings()
        self.store = store
        self.metrics = metrics
        self.tokens = settings.api_token_map()
        self.throttle = AuthThrottle(settings.auth_failure_limit, settings.auth_failure_window)
        # Each app's default lane, and its quota of profiles (gateway/quotas.py).
        self.lanes: dict[str, Lane] = settings.app_lane_map()
        self.quotas: AppQuotas = settings.app_quotas_in_force()
        self.configured: list[Backend] = settings.configured_backends()
        # Set when a dispatcher runs in this process: wakes it after a commit.
        self.notify: Callable[[Sequence[Backend]], None] | None = None
        self.notify_webhooks: Callable[[], None] | None = None
        # Filled alongside the dispatcher, for the operator page: empty when this
        # process sends nothing (an API-only replica), so it says "unknown".
        self.breakers: dict[Backend, CircuitBreaker] = {}
        self.pacers: dict[Backend, FixedWindowPacer] = {}
        # Set by the server on SIGTERM: /readyz then fails so load balancers take this
        # process out while it still serves what they send meanwhile.
        self.draining = False


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


class ApiError(Exception):
    """Raised anywhere in a handler; rendered as an `ErrorBody` by the app."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(error=error, message=message, errors=errors or [])
        self.headers = headers or {}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(body), status, headers, media_type="application/json")


def error_response(exc: ApiError) -> Response:
    return json_response(exc.body, exc.status, exc.headers)


def authenticate(request: Request, *scopes: Scope) -> Caller:
    """The calling app and its scopes, or 401 (no or wrong token), 429 (too many
    failures from this address) or 403 (the token has none of `scopes`; no
    `scopes` means any valid token will do)."""
    caller = authenticate_with(request, context(request).tokens)
    require_scope(caller, *scopes)
    return caller


def require_scope(caller: Caller, *scopes: Scope) -> None:
    if scopes and not caller.may(*scopes):
        raise ApiError(
            403,
            "forbidden",
            f"app {caller.app!r}: this token lacks the {' or '.join(scopes)} scope",
        )


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def check_throttle(request: Request) -> None:
    """429 while the client's address is throttled for failed authentication."""
    wait = context(request).throttle.retry_after(client_address(request))
    if wait is not None:
        raise ApiError(
            429,
            "too_many_failures",
            f"too many failed attempts to authenticate from this address; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )


def authenticate_with(request: Request, tokens: Mapping[str, Caller]) -> Caller:
    """The caller `tokens` gives the presented bearer token, or 401. Every token
    is compared, in constant time, so the answer's timing says nothing about
    which token came close."""
    check_throttle(request)
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    caller: Caller | None = None
    if scheme.lower() == "bearer" and presented:
        for token, known in tokens.items():
            if hmac.compare_digest(token.encode(), presented.strip().encode()):
                caller = known
    if caller is None:
        if header:
            context(request).throttle.failed(client_address(request))
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.app_name = caller.app
    return caller


JSON_MEDIA_TYPE = "application/json"


def require_json(request: Request) -> None:
    """415 unless the body is declared as JSON in UTF-8. A missing Content-Type
    is let through (many HTTP clients send bytes without one, and the body must
    still parse as JSON); a declared other type or charset is a client that
    means something else, and guessing would store the wrong characters."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media_type, *params = (part.strip() for part in declared.split(";"))
    charsets = [
        value.strip().strip('"').lower()
        for name, _, value in (p.partition("=") for p in params)
        if name.strip().lower() == "charset"
    ]
    if media_type.lower() != JSON_MEDIA_TYPE or any(c not in ("utf-8", "utf8") for c in charsets):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as {JSON_MEDIA_TYPE} (UTF-8), not {declared[:100]!r}",
        )


def decode_json(body: bytes) -> Any:
    """The decoded body, or 400. msgspec raises more than `DecodeError` on hostile
    input: bytes that are not UTF-8, and nesting past its depth limit."""
    try:
        return _decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "bad_json", "body is not valid JSON: nested too deeply") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, or 413 as soon as it passes `limit` (never buffered whole),
    or 408 when it has not all arrived within GATEWAY_BODY_READ_TIMEOUT seconds:
    uvicorn has no body timeout, and a client trickling a body would otherwise
    hold its connection and buffer for ever."""
    too_large = ApiError(413, "too_large", f"request body is larger than {limit} bytes")
    declared = request.headers.get("content-length")
    # `isdigit` alone lets through digits `int` refuses, such as "²".
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    timeout = context(request).settings.body_read_timeout
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to read the answer; it only keeps a traceback out of the logs.
        raise ApiError(400, "bad_request", "the client left before sending its body") from None
    except TimeoutError:
        raise ApiError(
            408,
            "timeout",
            f"the request body did not arrive within {timeout:g} seconds",
            # The rest of the body may still come: it must not be read as a request.
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)
