"""Builds the Starlette app: routes, middleware, lifespan. No logic lives here."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from gateway.api import dead_letters, erasure, health, openapi, profiles, requests
from gateway.api.common import ApiError, Context, error_response
from gateway.api.observe import ObserveMiddleware
from gateway.apidocs import routes as docs_routes
from gateway.backends import registry
from gateway.backends.base import BackendAdapter
from gateway.config import Settings
from gateway.dispatch.dispatcher import Dispatcher
from gateway.mapping.load import mappings_for
from gateway.mapping.model import Mappings
from gateway.metrics import Metrics
from gateway.retention import RetentionPurger
from gateway.schema import Backend
from gateway.store.base import Store, StoreError
from gateway.store.factory import store_from_settings
from gateway.ui import routes as ui_routes
from gateway.webhooks import omneo as omneo_webhooks
from gateway.webhooks.applier import WebhookApplier

log = logging.getLogger("gateway")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette's own 404 (no route) and 405 (wrong method) as `ErrorBody` JSON,
    # like every other error, keeping its `Allow` header.
    assert isinstance(exc, HTTPException)
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        # Starlette names only the first route of the path, but two may share it
        # (GET and DELETE /v1/profiles/{id}). A literal path wins over a template,
        # as in OpenAPI: /v1/profiles/batch is POST, not a profile named "batch".
        matching = [
            route
            for route in request.app.routes
            if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
        ]
        literal = [route for route in matching if not route.param_convertors]
        allowed = {method for route in literal or matching for method in route.methods or ()}
        headers["Allow"] = ", ".join(sorted(allowed))
    return error_response(ApiError(exc.status_code, error, exc.detail, headers=headers))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # A bug, not the caller's fault: the traceback goes to the (redacted) log and
    # the caller gets the documented body without internals.
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return error_response(ApiError(500, "internal", "internal error; it was logged"))


async def _store_error(request: Request, exc: Exception) -> Response:
    # Nothing was stored; 503 tells the caller (or Omneo) to send it again.
    log.error("store unavailable: %s", exc, extra={"path": request.url.path})
    return error_response(
        ApiError(
            503,
            "store_unavailable",
            "the store could not answer; retry later",
            headers={"Retry-After": "1"},
        )
    )


@contextlib.asynccontextmanager
async def _adapters_from_settings(ctx: Context) -> AsyncIterator[dict[Backend, BackendAdapter]]:
    metrics = ctx.metrics

    def on_call(backend: Backend, endpoint: str, status: str, seconds: float) -> None:
        metrics.backend_calls.labels(backend, endpoint, status).observe(seconds)

    def on_wait(backend: Backend, seconds: float) -> None:
        metrics.rate_limit_wait.labels(backend).inc(seconds)

    async with registry.new_client(ctx.settings) as client:
        yield registry.build_adapters(
            ctx.settings,
            client,
            on_call=on_call,
            on_wait=on_wait,
            pacers=ctx.pacers,
            mapping=ctx.mapping,
        )


@contextlib.asynccontextmanager
async def _background(
    ctx: Context, adapters: Mapping[Backend, BackendAdapter] | None
) -> AsyncIterator[None]:
    """The dispatcher and the webhook applier, for as long as the app runs."""
    if not ctx.settings.dispatcher_enabled:
        yield
        return
    async with contextlib.AsyncExitStack() as stack:
        if adapters is None:
            adapters = await stack.enter_async_context(_adapters_from_settings(ctx))
        dispatcher = Dispatcher(ctx.store, adapters, ctx.settings, ctx.metrics)
        applier = WebhookApplier(ctx.store, ctx.settings, ctx.metrics)
        await dispatcher.start()
        stack.push_async_callback(dispatcher.stop)
        await applier.start()
        stack.push_async_callback(applier.stop)
        ctx.notify = dispatcher.notify
        ctx.notify_webhooks = applier.notify
        ctx.breakers = dispatcher.breakers
        yield


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    metrics: Metrics | None = None,
    adapters: Mapping[Backend, BackendAdapter] | None = None,
    mapping: Mappings | None = None,
) -> Starlette:
    """`adapters` replaces the ones built from `settings` (tests inject their own).
    `mapping` defaults to GATEWAY_MAPPING_FILE's (raises `MappingError`)."""
    settings = settings or Settings.from_env()
    metrics = metrics or Metrics()
    mapping = mapping or mappings_for(settings)
    store = store or store_from_settings(settings)
    ctx = Context(settings, store, metrics, mapping)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        if not ctx.tokens:
            log.warning("GATEWAY_API_TOKENS is empty: every API call will be refused with 401")
        if not ctx.configured:
            log.warning("no backend URL is set: writes are stored but go nowhere")
        if settings.omneo_url and not settings.omneo_webhook_secret:
            log.warning("GATEWAY_OMNEO_WEBHOOK_SECRET is empty: Omneo webhooks will be refused")
        if not settings.sealer().enabled:
            log.warning(
                "GATEWAY_ENCRYPTION_KEYS is empty: profiles are stored UNENCRYPTED;"
                " set a key (`gateway generate-key`) anywhere but on a laptop"
            )
        log.info(
            "mapping in force",
            extra={"mapping_file": ctx.mapping.source or "none: the built-in mapping"},
        )
        purger = RetentionPurger(store, settings)
        await purger.start()
        try:
            async with _background(ctx, adapters):
                yield
        finally:
            await purger.stop()
            await store.close()

    routes = [
        Route("/v1/profiles", profiles.post_profile, methods=["POST"]),
        Route("/v1/profiles/batch", profiles.post_batch, methods=["POST"]),
        Route(
            "/v1/profiles/{external_id:path}",
            erasure.profile_resource,
            methods=["GET", "DELETE"],
        ),
        Route("/v1/requests/{request_id}", requests.get_request, methods=["GET"]),
        Route("/v1/dead-letters", dead_letters.list_dead_letters, methods=["GET"]),
        Route("/v1/dead-letters/replay", dead_letters.replay, methods=["POST"]),
        Route("/v1/webhooks/omneo/{event}", omneo_webhooks.receive, methods=["POST"]),
        Route("/livez", health.livez, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/openapi.json", openapi.openapi, methods=["GET"]),
        *ui_routes.routes(),
        *docs_routes.routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ObserveMiddleware, metrics=metrics)],
        exception_handlers={
            ApiError: _api_error,
            StoreError: _store_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    ui_routes.prepare(app, metrics)
    app.state.openapi = openapi.build_openapi(settings.omneo_webhook_signature_header)
    return app


def create_app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` (several worker processes)."""
    return create_app(Settings.from_env())
