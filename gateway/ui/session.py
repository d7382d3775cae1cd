"""Who is asking, for `/ui`: a bearer token, or the signed cookie the sign-in form sets.

The cookie holds no token. It carries the app's name, an expiry and a random
session id, signed with a key derived from the token that signed in, so a
forged or altered cookie is refused without a look at the store, and removing
the token from GATEWAY_API_TOKENS ends its sessions. The session id must also
be recorded in the store (hashed): signing out deletes that row, so a copied
cookie stops working at once, on every replica sharing the store, and
`gateway revoke-sessions` deletes every row, ending all sessions.

The page needs the `operate` scope, checked at sign-in and on every request
(so taking the scope away from a token ends its sessions too).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import ApiError, authenticate, context, require_scope
from gateway.auth.tokens import Caller, Scope

COOKIE = "gateway_ui"
COOKIE_PATH = "/ui"
SESSION_SECONDS = 12 * 3600
# A header no cross-site form can send (and a cross-site fetch could only send
# after a CORS preflight the gateway never grants): the CSRF check.
CSRF_HEADER = "x-gateway-ui"
SCOPE: Scope = "operate"


@dataclass(frozen=True)
class Kind:
    """Where a session cookie is good: its name, path, signing purpose and the
    scope it needs (None: any valid token). Each kind signs with its own key,
    so a cookie of one kind is no cookie of another."""

    cookie: str
    path: str
    purpose: bytes
    scope: Scope | None


UI = Kind(COOKIE, COOKIE_PATH, b"gateway-ui-session", SCOPE)
# `/docs`: the API's reference, open to any valid token, as `/openapi.json` is.
DOCS = Kind("gateway_docs", "/docs", b"gateway-docs-session", None)


def _key(token: str, kind: Kind = UI) -> bytes:
    return hashlib.sha256(kind.purpose + b"\0" + token.encode()).digest()


def _sign(token: str, payload: str, kind: Kind = UI) -> str:
    return hmac.new(_key(token, kind), payload.encode(), hashlib.sha256).hexdigest()


def id_hash(session_id: str) -> str:
    """What the store keeps of a session id: a reader of the store cannot
    rebuild a cookie from it."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def new_session(token: str, app: str, session_id: str, expires: int, kind: Kind = UI) -> str:
    name = base64.urlsafe_b64encode(app.encode()).decode().rstrip("=")
    payload = f"{name}.{expires}.{session_id}"
    return f"{payload}.{_sign(token, payload, kind)}"


def read_cookie(
    value: str, tokens: Mapping[str, Caller], now: float | None = None, kind: Kind = UI
) -> tuple[Caller, str] | None:
    """(the caller of the token that signed the cookie, its session id), or
    None: forged, expired, or its token gone. The store is not asked here."""
    parts = value.split(".")
    if len(parts) != 4:
        return None
    name, expires, session_id, signature = parts
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        return None
    if int(expires) < (now if now is not None else time.time()):
        return None
    try:
        app = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    payload = f"{name}.{expires}.{session_id}"
    found: Caller | None = None
    for token, caller in tokens.items():
        if caller.app == app and hmac.compare_digest(_sign(token, payload, kind), signature):
            found = caller
    return (found, session_id) if found is not None else None


def caller_for_token(token: str, tokens: Mapping[str, Caller]) -> Caller | None:
    """The caller `token` belongs to; every token compared in constant time."""
    found: Caller | None = None
    for known, caller in tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            found = caller
    return found


def unauthorized(kind: Kind = UI) -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        f"sign in at {kind.path} or send a bearer token",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def ui_caller(request: Request, kind: Kind = UI) -> Caller:
    """The calling app (bearer token or a live session cookie) with the
    kind's scope (`operate` for the UI); else 401, or 403 for a token without it."""
    scopes = (kind.scope,) if kind.scope else ()
    if "authorization" in request.headers:
        return authenticate(request, *scopes)
    value = request.cookies.get(kind.cookie)
    found = read_cookie(value, context(request).tokens, kind=kind) if value else None
    if found is None:
        raise unauthorized(kind)
    caller, session_id = found
    if not await context(request).store.ui_session_alive(id_hash(session_id), time.time()):
        raise unauthorized(kind)
    require_scope(caller, *scopes)
    request.state.app_name = caller.app
    request.state.by_cookie = True
    request.state.session_id = session_id
    return caller


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


async def start_session(
    response: Response, request: Request, token: str, app: str, kind: Kind = UI
) -> None:
    """Record a new session in the store and set its cookie."""
    now = time.time()
    expires = int(now + SESSION_SECONDS)
    session_id = secrets.token_urlsafe(32)
    await context(request).store.add_ui_session(id_hash(session_id), app, expires, now)
    response.set_cookie(
        kind.cookie,
        new_session(token, app, session_id, expires, kind),
        max_age=SESSION_SECONDS,
        path=kind.path,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


async def end_session(response: Response, request: Request) -> None:
    """Forget the session in the store (a copy of the cookie dies with it)
    and tell the browser to drop the cookie."""
    session_id: str | None = getattr(request.state, "session_id", None)
    if session_id is not None:
        await context(request).store.end_ui_session(id_hash(session_id))
    response.delete_cookie(
        COOKIE,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
