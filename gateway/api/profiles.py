"""`POST /v1/profiles`, `POST /v1/profiles/batch`, `GET /v1/profiles/{external_id}`."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import (
    ApiError,
    authenticate,
    context,
    decode_json,
    json_response,
    read_body,
    require_json,
)
from gateway.metrics import child
from gateway.schema import Accepted, Backend, NormalizedProfile
from gateway.store.base import IdempotencyConflict, NewRequest, StoreError
from gateway.ui.profile_view import summarize
from gateway.validation import InvalidInput, parse_batch, parse_single, reject_nul

log = logging.getLogger("gateway.api")

Parser = Callable[[Any, Sequence[Backend]], tuple[list[NormalizedProfile], list[Backend]]]

_OUTCOME_BY_STATUS = {
    400: "invalid",
    401: "unauthorized",
    403: "unauthorized",  # a token without the write scope
    429: "unauthorized",  # throttled after failed attempts
    409: "conflict",
    413: "too_large",
    415: "invalid",
    422: "invalid",
}
MAX_IDEMPOTENCY_KEY = 255


def new_request_id() -> str:
    """32 hex digits, like a UUID, but led by the time in milliseconds (as a
    UUIDv7 is): the requests table's key index then grows at its end instead
    of taking a random page for every accept."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


async def post_profile(request: Request) -> Response:
    return await _write(request, parse_single)


async def post_batch(request: Request) -> Response:
    return await _write(request, parse_batch)


async def _write(request: Request, parse: Parser) -> Response:
    ctx = context(request)
    app = "unknown"
    try:
        app = authenticate(request, "write").app
        response, outcome, count = await _accept(request, parse, app)
    except ApiError as exc:
        outcome = _OUTCOME_BY_STATUS.get(exc.status, "error")
        child(ctx.metrics.inbound_requests, app, outcome).inc()
        raise
    child(ctx.metrics.inbound_requests, app, outcome).inc()
    child(ctx.metrics.inbound_profiles, app, outcome).inc(count)
    return response


async def _accept(request: Request, parse: Parser, app: str) -> tuple[Response, str, int]:
    ctx = context(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            400, "bad_request", f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} chars"
        )
    require_json(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    data = decode_json(body)
    try:
        # JSON can carry NUL only as the escape `\u0000`: most bodies skip the walk.
        if b"\\u0000" in body:
            reject_nul(data)
        profiles, targets = parse(data, ctx.configured)
    except InvalidInput as exc:
        raise ApiError(422, "invalid", "the body does not match the schema", exc.errors) from None

    new = NewRequest(
        request_id=new_request_id(),
        app=app,
        targets=targets,
        profiles=profiles,
        received_at=time.time(),
        idempotency_key=key,
        body_hash=hashlib.sha256(body).hexdigest() if key is not None else None,
    )
    started = time.perf_counter()
    try:
        result = await ctx.store.accept(new)
    except IdempotencyConflict as exc:
        raise ApiError(
            409,
            "idempotency_conflict",
            f"Idempotency-Key was already used with another body (request {exc.request_id})",
        ) from None
    except StoreError:
        log.exception("store write failed", extra={"app": app, "profiles": len(profiles)})
        raise ApiError(
            503,
            "store_unavailable",
            "the write could not be stored; retry later",
            headers={"Retry-After": "1"},
        ) from None
    finally:
        ctx.metrics.store_write_latency.observe(time.perf_counter() - started)

    if ctx.notify is not None and not result.replayed:
        ctx.notify(result.targets)
    outcome = "replayed" if result.replayed else "accepted"
    log.info(
        "write %s",
        outcome,
        extra={"app": app, "request_id": result.request_id, "profiles": result.profiles},
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    answer = Accepted(
        request_id=result.request_id, profiles=result.profiles, targets=result.targets
    )
    return json_response(answer, 202, headers), outcome, len(profiles)


async def get_profile(request: Request) -> Response:
    """In full for `read`; to a writer or an operator, what the operator page
    shows: states, ids and the names of the fields, never their values."""
    caller = authenticate(request, "read", "write", "operate")
    ctx = context(request)
    external_id = request.path_params["external_id"]
    view = await ctx.store.get_profile(external_id)
    if view is None:
        raise ApiError(404, "not_found", "no profile with that external_id")
    if caller.may("read"):
        return json_response(view)
    return json_response(summarize(view, ctx.configured))
