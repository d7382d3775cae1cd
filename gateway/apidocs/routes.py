"""`/docs`: Swagger UI on the gateway's OpenAPI document, behind the same auth.

`/openapi.json` takes any valid bearer token, whatever its scopes; so does every
route here. A browser cannot send a bearer token when it opens a page, so a
browser that has none gets a sign-in form (`401`, HTML) whose token starts a
session cookie good for `/docs` only (`session.DOCS`: its own name, path and
signing key, recorded in the store like the operator page's, so signing out
elsewhere or `gateway revoke-sessions` ends it too). Anything else without
credentials gets the API's JSON `401`, exactly as from `/openapi.json`.

Swagger UI's files come from the `swagger-ui-bundle-v2` package: no CDN, and the
page's Content-Security-Policy allows nothing but this origin.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from importlib.resources.abc import Traversable
from urllib.parse import parse_qs

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
)
from gateway.ui import pages, session

log = logging.getLogger("gateway.docs")

SIGN_IN_MAX_BYTES = 4096
# Swagger UI's stylesheet draws its icons as `data:` SVG images; nothing else
# but this origin may be loaded, framed, posted to or connected to.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'"
)
# name -> (package, file, media type)
_ASSETS = {
    "swagger-ui-bundle.js": ("swagger", "swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger", "swagger-ui.css", "text/css; charset=utf-8"),
    "favicon-32x32.png": ("swagger", "favicon-32x32.png", "image/png"),
    "docs.js": ("own", "docs.js", "text/javascript; charset=utf-8"),
    "docs.css": ("own", "docs.css", "text/css; charset=utf-8"),
}


def routes() -> list[BaseRoute]:
    return [
        Route("/docs", page, methods=["GET"]),
        Route("/docs/session", sign_in, methods=["POST"]),
        Route("/docs/openapi.json", document, methods=["GET"]),
        Route("/docs/assets/{name}", asset, methods=["GET"]),
    ]


@functools.cache
def swagger_ui_dir() -> Traversable:
    """The package's `vendor/swagger-ui-<version>/` folder (the version is in its name)."""
    vendor = resources.files("swagger_ui_bundle").joinpath("vendor")
    found = sorted(d.name for d in vendor.iterdir() if d.name.startswith("swagger-ui-"))
    if not found:
        raise RuntimeError("swagger-ui-bundle-v2 holds no swagger-ui-* folder")
    return vendor.joinpath(found[-1])


@functools.cache
def _read(origin: str, name: str) -> bytes:
    if origin == "swagger":
        return swagger_ui_dir().joinpath(name).read_bytes()
    return resources.files("gateway.apidocs").joinpath("static", name).read_bytes()


def _headers() -> dict[str, str]:
    headers = pages.security_headers(DOCS_CSP)
    headers["Cache-Control"] = "private, no-cache"
    return headers


def _sign_in_form(status: int = 401, message: str | None = None) -> Response:
    return pages.sign_in(
        status,
        message,
        action="/docs/session",
        heading="API docs",
        label="Any API token",
    )


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def page(request: Request) -> Response:
    try:
        await session.ui_caller(request, session.DOCS)
    except ApiError as exc:
        if exc.status == 401 and _wants_html(request):
            return _sign_in_form()
        raise
    return Response(
        _read("own", "index.html"), headers=_headers(), media_type="text/html; charset=utf-8"
    )


async def document(request: Request) -> Response:
    await session.ui_caller(request, session.DOCS)
    return json_response(request.app.state.openapi, headers={"Cache-Control": "no-store"})


async def asset(request: Request) -> Response:
    await session.ui_caller(request, session.DOCS)
    found = _ASSETS.get(request.path_params["name"])
    if found is None:
        raise ApiError(404, "not_found", "no such file")
    origin, name, media_type = found
    return Response(_read(origin, name), headers=_headers(), media_type=media_type)


async def sign_in(request: Request) -> Response:
    session.check_same_origin(request)
    try:
        return await _sign_in(request)
    except ApiError as exc:
        if exc.status in (401, 429) and _wants_html(request):
            message = (
                "That token is not one of GATEWAY_API_TOKENS."
                if exc.status == 401
                else f"Too many failed sign-ins from this address; try again in"
                f" {exc.headers.get('Retry-After', '?')} s."
            )
            response = _sign_in_form(exc.status, message)
            response.headers.update(exc.headers)
            return response
        raise


async def _sign_in(request: Request) -> Response:
    if "authorization" in request.headers:
        caller = authenticate(request)
        token = request.headers["authorization"].partition(" ")[2].strip()
    else:
        check_throttle(request)
        body = await read_body(request, SIGN_IN_MAX_BYTES)
        form = parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        found = session.caller_for_token(token, context(request).tokens) if token else None
        if found is None:
            if token:
                context(request).throttle.failed(client_address(request))
            raise session.unauthorized(session.DOCS)
        caller = found
    log.info("API docs sign-in", extra={"app": caller.app})
    response = RedirectResponse("/docs", status_code=303)
    await session.start_session(response, request, token, caller.app, session.DOCS)
    return response
