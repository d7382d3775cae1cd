"""Who is asking, for `/ui`: a bearer token, or the signed cookie the sign-in form sets.

The cookie holds no token. It carries the app's name and an expiry, signed with
a key derived from that app's token, so it works on every replica sharing
`GATEWAY_API_TOKENS` without server-side state, and removing a token from the
setting ends every session opened with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import ApiError, authenticate, context

COOKIE = "gateway_ui"
COOKIE_PATH = "/ui"
SESSION_SECONDS = 12 * 3600
# A header no cross-site form can send (and a cross-site fetch could only send
# after a CORS preflight the gateway never grants): the CSRF check.
CSRF_HEADER = "x-gateway-ui"


def _key(token: str) -> bytes:
    return hashlib.sha256(b"gateway-ui-session\0" + token.encode()).digest()


def _sign(token: str, payload: str) -> str:
    return hmac.new(_key(token), payload.encode(), hashlib.sha256).hexdigest()


def new_session(token: str, app: str, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + SESSION_SECONDS)
    name = base64.urlsafe_b64encode(app.encode()).decode().rstrip("=")
    payload = f"{name}.{expires}"
    return f"{payload}.{_sign(token, payload)}"


def session_app(value: str, tokens: dict[str, str], now: float | None = None) -> str | None:
    """The app a cookie was signed for, or None (forged, expired, token gone)."""
    name, _, rest = value.partition(".")
    expires, _, signature = rest.partition(".")
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        return None
    if int(expires) < (now if now is not None else time.time()):
        return None
    try:
        app = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    payload = f"{name}.{expires}"
    found: str | None = None
    for token, token_app in tokens.items():
        if token_app == app and hmac.compare_digest(_sign(token, payload), signature):
            found = app
    return found


def app_for_token(token: str, tokens: dict[str, str]) -> str | None:
    """The app `token` belongs to; every token compared in constant time."""
    found: str | None = None
    for known, app in tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            found = app
    return found


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "sign in at /ui or send a bearer token",
        headers={"WWW-Authenticate": "Bearer"},
    )


def ui_app(request: Request) -> str:
    """The calling app's name (bearer token or session cookie), or 401."""
    if "authorization" in request.headers:
        return authenticate(request)
    value = request.cookies.get(COOKIE)
    app = session_app(value, context(request).tokens) if value else None
    if app is None:
        raise unauthorized()
    request.state.app_name = app
    request.state.by_cookie = True
    return app


def check_same_origin(request: Request) -> None:
    """403 for a browser's cross-site POST (login CSRF, or a stolen click)."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise ApiError(403, "forbidden", "cross-site request refused")


def require_csrf_header(request: Request) -> None:
    """A cookie-authenticated change must come from the page's own script."""
    if getattr(request.state, "by_cookie", False) and request.headers.get(CSRF_HEADER) != "1":
        raise ApiError(403, "forbidden", f"send the {CSRF_HEADER.title()}: 1 header")
    check_same_origin(request)


def set_session(response: Response, request: Request, token: str, app: str) -> None:
    response.set_cookie(
        COOKIE,
        new_session(token, app),
        max_age=SESSION_SECONDS,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
