"""`POST /v1/profiles`, `POST /v1/profiles/batch`, `GET /v1/profiles/{external_id}`."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway import tracing
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
from gateway.schema import MAX_BATCH, Accepted, Backend, Lane
from gateway.store.base import AcceptResult, IdempotencyConflict, NewRequest, StoreError
from gateway.ui.profile_view import summarize
from gateway.validation import InvalidInput, ParsedWrite, parse_batch, parse_single, reject_nul

log = logging.getLogger("gateway.api")

Parser = Callable[[Any, Sequence[Backend]], ParsedWrite]
# How many profiles a decoded body carries, for the app's quota: read before
# the body is validated, so an app over its quota costs no validation.
SizeOf = Callable[[Any], int]

_OUTCOME_BY_STATUS = {
    400: "invalid",
    401: "unauthorized",
    403: "unauthorized",  # a token without the write scope
    429: "unauthorized",  # throttled after failed attempts (over quota: see _outcome)
    409: "conflict",
    413: "too_large",
    415: "invalid",
    422: "invalid",
}
MAX_IDEMPOTENCY_KEY = 255
OVER_QUOTA = "over_quota"
OVER_BURST = "batch_over_quota_burst"


def new_request_id() -> str:
    """32 hex digits, like a UUID, but led by the time in milliseconds (as a
    UUIDv7 is): the requests table's key index then grows at its end instead
    of taking a random page for every accept."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def _one(data: Any) -> int:
    return 1


def _batch_size(data: Any) -> int:
    """The batch's profile count; 0 for a body validation refuses on its shape
    alone (no list, or outside 1 to MAX_BATCH), which costs no quota."""
    profiles = data.get("profiles") if isinstance(data, dict) else None
    if isinstance(profiles, list) and 1 <= len(profiles) <= MAX_BATCH:
        return len(profiles)
    return 0


async def post_profile(request: Request) -> Response:
    return await _write(request, parse_single, _one, "/v1/profiles")


async def post_batch(request: Request) -> Response:
    return await _write(request, parse_batch, _batch_size, "/v1/profiles/batch")


# Each write route's span: its name and first attributes, made once.
_SPANS = {
    route: (f"POST {route}", {"http.request.method": "POST", "http.route": route})
    for route in ("/v1/profiles", "/v1/profiles/batch")
}


def _outcome(exc: ApiError) -> str:
    if exc.body.error in (OVER_QUOTA, OVER_BURST):
        return OVER_QUOTA
    return _OUTCOME_BY_STATUS.get(exc.status, "error")


async def _write(request: Request, parse: Parser, size: SizeOf, route: str) -> Response:
    # The server span continues the caller's trace (W3C traceparent/tracestate).
    name, attrs = _SPANS[route]
    with tracing.span(name, attrs, kind="server", headers=request.headers) as span:
        ctx = context(request)
        app = "unknown"
        try:
            app = authenticate(request, "write").app
            span.set("gateway.app", app)
            response, outcome, count = await _accept(request, parse, size, app)
        except ApiError as exc:
            outcome = _outcome(exc)
            child(ctx.metrics.inbound_requests, app, outcome).inc()
            span.update({"gateway.outcome": outcome, "http.response.status_code": exc.status})
            if exc.status >= 500:
                span.fail(str(exc.status))
            else:
                span.answered()
            raise
        child(ctx.metrics.inbound_requests, app, outcome).inc()
        child(ctx.metrics.inbound_profiles, app, outcome).inc(count)
        span.update({"gateway.outcome": outcome, "http.response.status_code": 202})
        return response


def _number(value: float) -> str:
    """1000.0 -> '1000', 0.5 -> '0.5': never exponent notation."""
    return f"{value:f}".rstrip("0").rstrip(".")


def _spend_quota(request: Request, app: str, count: int) -> int:
    """Takes `count` profiles from the app's quota and returns how many it took
    (0: the app has none), or raises 413 (more than the burst: never fits) or
    429 with Retry-After (not enough yet), taking nothing."""
    ctx = context(request)
    bucket = ctx.quotas.bucket(app)
    if bucket is None or count == 0:
        return 0
    burst = bucket.quota.burst

    def refused(reason: str) -> None:
        child(ctx.metrics.app_quota_rejected, app, reason).inc()
        child(ctx.metrics.app_quota_profiles, app, "rejected").inc(count)

    if count > burst:
        refused("burst")
        raise ApiError(
            413,
            OVER_BURST,
            f"app {app!r} may send at most {burst} profiles at once (its quota's burst,"
            f" GATEWAY_APP_QUOTAS); this batch has {count}: send smaller batches",
        )
    wait = bucket.take(count)
    if wait is not None:
        refused("rate")
        raise ApiError(
            429,
            OVER_QUOTA,
            f"app {app!r} is over its quota of {_number(bucket.quota.rate)} profiles a second"
            f" (GATEWAY_APP_QUOTAS); {count} profile(s) fit again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    return count


async def _accept(
    request: Request, parse: Parser, size: SizeOf, app: str
) -> tuple[Response, str, int]:
    ctx = context(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            400, "bad_request", f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} chars"
        )
    require_json(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    data = decode_json(body)
    taken = _spend_quota(request, app, size(data))
    stored = False
    try:
        result, lane = await _store(request, app, key, body, data, parse)
        stored = not result.replayed
    finally:
        bucket = ctx.quotas.bucket(app)
        if taken and bucket is not None:
            if stored:
                child(ctx.metrics.app_quota_profiles, app, "admitted").inc(taken)
            else:
                # Nothing new was stored (refused, replayed, the store failed).
                bucket.give_back(taken)

    if ctx.notify is not None and not result.replayed:
        ctx.notify(result.targets)
    outcome = "replayed" if result.replayed else "accepted"
    tracing.current().update(
        {
            "gateway.request_id": result.request_id,
            "gateway.profiles": result.profiles,
            "gateway.targets": list(result.targets),
            "gateway.lane": lane,
            "gateway.replayed": result.replayed,
        }
    )
    log.info(
        "write %s",
        outcome,
        extra={"app": app, "request_id": result.request_id, "profiles": result.profiles},
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    answer = Accepted(
        request_id=result.request_id, profiles=result.profiles, targets=result.targets, lane=lane
    )
    return json_response(answer, 202, headers), outcome, result.profiles


async def _store(
    request: Request, app: str, key: str | None, body: bytes, data: Any, parse: Parser
) -> tuple[AcceptResult, Lane]:
    """Validates the decoded body and commits it: the stored (or replayed) write
    and the lane it waits in."""
    ctx = context(request)
    with tracing.span("gateway.validate") as span:
        try:
            # JSON can carry NUL only as the escape `\\u0000`: most bodies skip the walk.
            if b"\\u0000" in body:
                reject_nul(data)
            parsed = parse(data, ctx.configured)
        except InvalidInput as exc:
            # How many errors, never which values: a message may quote the input.
            span.update({"gateway.outcome": "invalid", "gateway.errors": len(exc.errors)})
            span.answered()
            raise ApiError(
                422, "invalid", "the body does not match the schema", exc.errors
            ) from None
        span.update({"gateway.outcome": "valid", "gateway.profiles": len(parsed.profiles)})
    profiles = parsed.profiles
    lane: Lane = parsed.priority or ctx.lanes.get(app, "realtime")
    new = NewRequest(
        request_id=new_request_id(),
        app=app,
        targets=parsed.targets,
        profiles=profiles,
        received_at=time.time(),
        idempotency_key=key,
        # Of the body as sent, so `priority` and `resend` are part of it: the
        # same key with another lane is another body (409).
        body_hash=hashlib.sha256(body).hexdigest() if key is not None else None,
        lane=lane,
        resend=parsed.resend,
    )
    started = time.perf_counter()
    try:
        with tracing.span("store.accept", {"gateway.profiles": len(profiles)}) as span:
            traceparent = _stored_traceparent()
            if traceparent is not None:
                new = msgspec.structs.replace(new, traceparent=traceparent)
            result = await ctx.store.accept(new)
            # A replay answers with the first write's id.
            span.update(
                {"gateway.request_id": result.request_id, "gateway.replayed": result.replayed}
            )
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
    return result, lane


def _stored_traceparent() -> str | None:
    """The commit span's traceparent, stored with the write so that its
    deliveries join the caller's trace. Only a well-formed one: other
    processes read it back, perhaps another release's."""
    traceparent = tracing.current_traceparent()
    if traceparent is None or not tracing.TRACEPARENT.fullmatch(traceparent):
        return None
    return traceparent


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
