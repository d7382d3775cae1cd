"""What every API module shares: the app context, errors, auth, body reading."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.schema import Backend, ErrorBody, FieldError
from gateway.store.base import Store

_encode = msgspec.json.Encoder().encode


class Context:
    """What handlers may reach: set once on `app.state.ctx` by `create_app`."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.tokens = settings.api_token_map()
        self.configured: list[Backend] = settings.configured_backends()
        # Set when a dispatcher runs in this process: wakes it after a commit.
        self.notify: Callable[[Sequence[Backend]], None] | None = None
        self.notify_webhooks: Callable[[], None] | None = None


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


def authenticate(request: Request) -> str:
    """The calling app's name, or 401."""
    return authenticate_with(request, context(request).tokens)


def authenticate_with(request: Request, tokens: dict[str, str]) -> str:
    """The name `tokens` gives the presented bearer token, or 401. Every token
    is compared, in constant time, so the answer's timing says nothing about
    which token came close."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    app: str | None = None
    if scheme.lower() == "bearer" and presented:
        for token, name in tokens.items():
            if hmac.compare_digest(token.encode(), presented.strip().encode()):
                app = name
    if app is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.app_name = app
    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, or 413 as soon as it passes `limit` (never buffered whole)."""
    too_large = ApiError(413, "too_large", f"request body is larger than {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
