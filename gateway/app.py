"""Builds the Starlette app: routes, middleware, lifespan. No logic lives here."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api import health, openapi, profiles, requests
from gateway.api.common import ApiError, Context, error_response
from gateway.api.observe import ObserveMiddleware
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.store.base import Store
from gateway.store.factory import store_from_settings

log = logging.getLogger("gateway")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


def create_app(
    settings: Settings | None = None, *, store: Store | None = None, metrics: Metrics | None = None
) -> Starlette:
    settings = settings or Settings.from_env()
    metrics = metrics or Metrics()
    store = store or store_from_settings(settings)
    ctx = Context(settings, store, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        if not ctx.tokens:
            log.warning("GATEWAY_API_TOKENS is empty: every API call will be refused with 401")
        if not ctx.configured:
            log.warning("no backend URL is set: writes are stored but go nowhere")
        try:
            yield
        finally:
            await store.close()

    routes = [
        Route("/v1/profiles", profiles.post_profile, methods=["POST"]),
        Route("/v1/profiles/batch", profiles.post_batch, methods=["POST"]),
        Route("/v1/profiles/{external_id:path}", profiles.get_profile, methods=["GET"]),
        Route("/v1/requests/{request_id}", requests.get_request, methods=["GET"]),
        Route("/livez", health.livez, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/openapi.json", openapi.openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ObserveMiddleware, metrics=metrics)],
        exception_handlers={ApiError: _api_error},
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.openapi = openapi.build_openapi()
    return app


def create_app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` (several worker processes)."""
    return create_app(Settings.from_env())
