"""`/ui`: the operator page, its files, sign-in, and the JSON the page polls.

Every route needs an app's credentials: a bearer token (scripts, curl) or the
session cookie set by the sign-in form. A browser that is not signed in gets
the form (`401`, HTML); anything else gets the API's JSON `401`.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.api.common import (
    ApiError,
    authenticate,
    check_throttle,
    client_address,
    context,
    json_response,
    read_body,
    require_scope,
)
from gateway.api.dead_letters import REPLAYABLE, perform_replay
from gateway.metrics import Metrics
from gateway.schema import BACKENDS, FieldError
from gateway.ui import pages, session, status
from gateway.ui.profile_view import summarize
from gateway.ui.rates import ErrorRatio

log = logging.getLogger("gateway.ui")

SIGN_IN_MAX_BYTES = 4096
PAGE_SIZE = 50
MAX_PAGE = 200
_NUMBER = re.compile(r"[0-9]{1,19}")


def routes() -> list[BaseRoute]:
    return [
        Route("/ui", page, methods=["GET"]),
        Route("/ui/session", sign_in, methods=["POST"]),
        Route("/ui/sign-out", sign_out, methods=["POST"]),
        Route("/ui/static/{name}", static_file, methods=["GET"]),
        Route("/ui/api/status", get_status, methods=["GET"]),
        Route("/ui/api/deliveries", list_deliveries, methods=["GET"]),
        Route("/ui/api/profiles/{external_id:path}", get_profile, methods=["GET"]),
        Route("/ui/api/replay", replay, methods=["POST"]),
        Route("/ui/api/mapping", get_mapping, methods=["GET"]),
    ]


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def page(request: Request) -> Response:
    try:
        await session.ui_caller(request)
    except ApiError as exc:
        if exc.status == 401 and _wants_html(request):
            return pages.sign_in()
        raise
    response = pages.static("index.html")
    assert response is not None
    return response


async def sign_in(request: Request) -> Response:
    session.check_same_origin(request)
    try:
        return await _sign_in(request)
    except ApiError as exc:
        # A browser gets the form again, with the reason; scripts get the JSON.
        if exc.status in (401, 403, 429) and _wants_html(request):
            message = _SIGN_IN_REFUSALS[exc.status].format(**exc.headers)
            response = pages.sign_in(exc.status, message)
            response.headers.update(exc.headers)
            return response
        raise


_SIGN_IN_REFUSALS = {
    401: "That token is not one of GATEWAY_API_TOKENS.",
    403: "That token lacks the operate scope the operator page needs.",
    429: "Too many failed sign-ins from this address; try again in {Retry-After} s.",
}


async def _sign_in(request: Request) -> Response:
    if "authorization" in request.headers:
        caller = authenticate(request, session.SCOPE)
        token = request.headers["authorization"].partition(" ")[2].strip()
    else:
        check_throttle(request)
        form = parse_qs((await read_body(request, SIGN_IN_MAX_BYTES)).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        found = session.caller_for_token(token, context(request).tokens) if token else None
        if found is None:
            if token:
                context(request).throttle.failed(client_address(request))
            raise session.unauthorized()
        require_scope(found, session.SCOPE)
        caller = found
    log.info("operator page sign-in", extra={"app": caller.app})
    response = RedirectResponse("/ui", status_code=303)
    await session.start_session(response, request, token, caller.app)
    return response


async def sign_out(request: Request) -> Response:
    await session.ui_caller(request)
    session.require_csrf_header(request)
    response = Response(status_code=204)
    await session.end_session(response, request)
    return response


async def static_file(request: Request) -> Response:
    await session.ui_caller(request)
    response = pages.static(request.path_params["name"])
    if response is None:
        raise ApiError(404, "not_found", "no such file")
    return response


def prepare(app: Starlette, metrics: Metrics) -> None:
    """Called when the app is built: the error ratio's first reading is the
    counters' zero at the start, so a page opened later still covers what came
    before it (and says how long that was)."""
    app.state.ui_error_ratio = ErrorRatio(metrics)


def _ratio(request: Request) -> ErrorRatio:
    ratio: ErrorRatio = request.app.state.ui_error_ratio
    return ratio


async def get_status(request: Request) -> Response:
    await session.ui_caller(request)
    ctx = context(request)
    view = await status.collect(
        ctx.store, ctx.configured, ctx.breakers, ctx.pacers, _ratio(request)
    )
    return json_response(view, headers={"Cache-Control": "no-store"})


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid", f"bad {field}", [FieldError(field, message)])


def _number(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not _NUMBER.fullmatch(text) or not low <= int(text) <= high:
        raise _invalid(name, f"{low} to {high}")
    return int(text)


async def list_deliveries(request: Request) -> Response:
    """Replayable deliveries, newest first; `before` (a delivery id) pages on."""
    await session.ui_caller(request)
    q = request.query_params
    state = q.get("state", "dead")
    if state not in REPLAYABLE:
        raise _invalid("state", f"one of {', '.join(REPLAYABLE)}")
    backend = q.get("backend") or None
    if backend is not None and backend not in BACKENDS:
        raise _invalid("backend", f"one of {', '.join(BACKENDS)}")
    limit = _number(request, "limit", PAGE_SIZE, 1, MAX_PAGE) or PAGE_SIZE
    before = _number(request, "before", None, 1, 2**63 - 1)
    rows = await context(request).store.recent_deliveries(
        state,
        backend,
        limit,
        before,
    )
    next_before = rows[-1].delivery_id if len(rows) == limit else None
    return json_response(
        {"deliveries": [status.row(r) for r in rows], "next_before": next_before},
        headers={"Cache-Control": "no-store"},
    )


async def get_profile(request: Request) -> Response:
    await session.ui_caller(request)
    ctx = context(request)
    view = await ctx.store.get_profile(request.path_params["external_id"])
    if view is None:
        raise ApiError(404, "not_found", "no profile with that external_id")
    return json_response(summarize(view, ctx.configured), headers={"Cache-Control": "no-store"})


async def get_mapping(request: Request) -> Response:
    """The mapping in force, every table complete (read-only)."""
    await session.ui_caller(request)
    mapping = context(request).mapping
    body = msgspec.to_builtins(mapping, order="deterministic")
    source = body.pop("source", None)
    return json_response({"source": source, "mapping": body})


async def replay(request: Request) -> Response:
    """As `POST /v1/dead-letters/replay`; for a cookie, only from the page's script."""
    caller = await session.ui_caller(request)
    session.require_csrf_header(request)
    # The log names who pressed the button: the app whose token opened the session.
    return await perform_replay(request, caller.app, via="operator page")
