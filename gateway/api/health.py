"""`/livez`, `/readyz` and `/metrics`: what orchestrators and Prometheus poll."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import context, json_response

log = logging.getLogger("gateway.health")
READY_TIMEOUT = 2.0


async def livez(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await asyncio.wait_for(context(request).store.ping(), READY_TIMEOUT)
    except Exception as exc:
        log.warning("store not ready: %s", exc)
        return json_response({"status": "unavailable", "store": str(exc)}, 503)
    return json_response({"status": "ok", "store": "ok"})


async def metrics(request: Request) -> Response:
    body = generate_latest(context(request).metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
