"""Omneo's `profile.created` / `profile.updated` webhooks: verify, store, answer.

Omneo posts the profile context itself (no envelope, no event name), so the
event name comes from the URL: one webhook per trigger. The event is committed
before the 200 goes back and applied afterwards by `WebhookApplier`, so the
answer is fast and a crash between the two loses nothing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway import tracing
from gateway.api.common import ApiError, context, json_response, read_body
from gateway.backends.omneo_keys import match_key_of_context
from gateway.store.base import WebhookEvent

log = logging.getLogger("gateway.webhooks")
EVENTS = ("profile.created", "profile.updated")


def signature_ok(secret: str, body: bytes, presented: str | None) -> bool:
    """HMAC-SHA256 of the raw body, sent hex or base64; compared in constant time."""
    if not secret or not presented:
        return False
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    presented = presented.strip()
    if presented.lower().startswith("sha256="):
        presented = presented[len("sha256=") :]
    candidates = []
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(presented))
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.b64decode(presented, validate=True))
    # Every candidate is compared, so timing does not tell which encoding matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate, digest)
    return matched


def _event_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def read_event(event: str, body: bytes, match_criteria: str, received_at: float) -> WebhookEvent:
    digest = hashlib.sha256(body).hexdigest()
    try:
        ctx = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # Not UTF-8, or nested past msgspec's depth limit: kept, as invalid.
        ctx = None
    if not isinstance(ctx, dict):
        return WebhookEvent("omneo", event, digest, body, received_at, invalid=True)
    omneo_id = ctx.get("id")
    return WebhookEvent(
        source="omneo",
        event=event,
        body_hash=digest,
        body=body,
        received_at=received_at,
        backend_id=str(omneo_id) if omneo_id is not None else None,
        match_key=match_key_of_context(ctx, match_criteria),
        event_time=_event_time(ctx.get("updated_at")),
    )


async def receive(request: Request) -> Response:
    event = request.path_params["event"]
    # The name comes from the URL: a metric label, log field or span attribute
    # only once known.
    label = event if event in EVENTS else "unknown"
    with tracing.span("omneo.webhook", _SPAN, kind="server", headers=request.headers) as span:
        span.set("gateway.webhook.event", label)
        try:
            response, result = await _receive(request, event, label)
        except ApiError as exc:
            result = _REFUSED.get(exc.body.error, "refused")
            span.update({"gateway.webhook.result": result, "http.response.status_code": exc.status})
            if exc.status >= 500:
                span.fail(str(exc.status))
            else:
                span.answered()
            raise
        span.update({"gateway.webhook.result": result, "http.response.status_code": 200})
        return response


_SPAN = {"http.request.method": "POST", "http.route": "/v1/webhooks/omneo/{event}"}
# The span's result for a refused webhook, by the error code of its answer.
_REFUSED = {
    "bad_json": "invalid",
    "bad_signature": "bad_signature",
    "not_found": "unknown_event",
    "not_configured": "not_configured",
}


async def _receive(request: Request, event: str, label: str) -> tuple[Response, str]:
    """The answer and the result: stored or duplicate (refusals raise)."""
    ctx = context(request)
    settings = ctx.settings
    if not settings.omneo_webhook_secret:
        raise ApiError(503, "not_configured", "GATEWAY_OMNEO_WEBHOOK_SECRET is not set")
    # Its own, small limit: anyone can send this much before the signature is checked.
    body = await read_body(request, settings.webhook_max_body_bytes)
    presented = request.headers.get(settings.omneo_webhook_signature_header)
    # The signature first: without it, not even which event names exist is told.
    if not signature_ok(settings.omneo_webhook_secret, body, presented):
        ctx.metrics.webhooks.labels(label, "bad_signature").inc()
        log.warning("webhook with a bad or missing signature", extra={"event": label})
        raise ApiError(401, "bad_signature", "missing or wrong webhook signature")
    if event not in EVENTS:
        raise ApiError(404, "not_found", f"no webhook of that name; known: {', '.join(EVENTS)}")

    # The mapping file's match_criteria, as the batches were sent with it.
    stored = read_event(event, body, ctx.mapping.omneo.match_criteria, time.time())
    with tracing.span("store.save_webhook"):
        saved = await ctx.store.save_webhook(stored)
    # Before the duplicate check, so a resent bad body gets the same 400 again.
    if stored.invalid:
        ctx.metrics.webhooks.labels(event, "invalid").inc()
        raise ApiError(400, "bad_json", "webhook body is not a JSON object; it was kept")
    if saved.duplicate:
        ctx.metrics.webhooks.labels(event, "duplicate").inc()
        return json_response({"status": "duplicate", "event_id": saved.event_id}), "duplicate"
    if ctx.notify_webhooks is not None:
        ctx.notify_webhooks()
    return json_response({"status": "stored", "event_id": saved.event_id}), "stored"
