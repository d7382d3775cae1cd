"""The Omneo simulator's own `/_sim/*` routes, beside the shared ones in `common`:
the webhook attempts, the webhook settings (`PUT /_sim/webhooks` merges), the
skipped events, the processing errors, and `/_sim/idle` to wait for the
background work to end."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.simulators.common import json_response
from gateway.simulators.omneo_processing import BatchProcessor


def webhook_routes(processor: BatchProcessor) -> list[Route]:
    async def get_webhooks(request: Request) -> Response:
        return json_response(processor.webhooks)

    async def delete_webhooks(request: Request) -> Response:
        processor.sender.attempts.clear()
        processor.skipped.clear()
        return Response(status_code=204)

    async def get_settings(request: Request) -> Response:
        return json_response(processor.settings)

    async def put_settings(request: Request) -> Response:
        try:
            changes = msgspec.json.decode(await request.body(), type=dict[str, Any])
            return json_response(processor.update_settings(changes))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return json_response({"message": str(exc)}, 422)

    async def get_skipped(request: Request) -> Response:
        return json_response(processor.skipped)

    async def get_errors(request: Request) -> Response:
        return json_response(processor.errors)

    async def get_idle(request: Request) -> Response:
        try:
            timeout = float(request.query_params.get("timeout", "10"))
        except ValueError:
            return json_response({"message": "timeout must be a number of seconds"}, 400)
        try:
            await asyncio.wait_for(processor.idle(), timeout)
        except TimeoutError:
            return json_response({"idle": False}, 503)
        return json_response({"idle": True})

    return [
        Route("/_sim/webhooks", get_webhooks, methods=["GET"]),
        Route("/_sim/webhooks", delete_webhooks, methods=["DELETE"]),
        Route("/_sim/webhooks", put_settings, methods=["PUT"]),
        Route("/_sim/webhooks/settings", get_settings, methods=["GET"]),
        Route("/_sim/webhooks/skipped", get_skipped, methods=["GET"]),
        Route("/_sim/errors", get_errors, methods=["GET"]),
        Route("/_sim/idle", get_idle, methods=["GET"]),
    ]
