"""`/livez`, `/readyz` and `/metrics`: what orchestrators and Prometheus poll."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import Context, authenticate_with, context, json_response
from gateway.auth.tokens import Caller
from gateway.schema import LANES

log = logging.getLogger("gateway.health")
READY_TIMEOUT = 2.0


async def livez(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    ctx = context(request)
    if ctx.draining:
        return json_response({"status": "draining"}, 503)
    try:
        await asyncio.wait_for(ctx.store.ping(), READY_TIMEOUT)
    except Exception as exc:
        log.warning("store not ready: %s", exc)
        # Unauthenticated: the exception text (hosts, paths, driver messages)
        # stays in the log.
        return json_response({"status": "unavailable", "store": "store unavailable"}, 503)
    return json_response({"status": "ok", "store": "ok"})


async def _refresh_queue_gauges(ctx: Context) -> None:
    """Queue depth and age are read from the store at scrape time, so they are
    current and every replica (API-only ones too) reports the same truth."""
    try:
        stats = {
            s.backend: s for s in await asyncio.wait_for(ctx.store.queue_stats(), READY_TIMEOUT)
        }
    except Exception as exc:
        log.warning("queue stats unavailable: %s", exc)
        return
    for backend in ctx.configured:
        s = stats.get(backend)
        ctx.metrics.queue_depth.labels(backend).set(s.depth if s else 0)
        for lane in LANES:
            ctx.metrics.queue_depth_lane.labels(backend, lane).set(s.lanes.get(lane, 0) if s else 0)
        ctx.metrics.oldest_pending_age.labels(backend).set(s.oldest_age if s else 0)


async def metrics(request: Request) -> Response:
    ctx = context(request)
    if ctx.settings.metrics_token:
        # Optional: metrics name the calling apps, which some teams keep private.
        authenticate_with(request, {ctx.settings.metrics_token: Caller("prometheus", frozenset())})
    await _refresh_queue_gauges(ctx)
    body = generate_latest(ctx.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
