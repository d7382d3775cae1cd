"""The page's files and the sign-in form, with headers that keep them to themselves."""

from __future__ import annotations

import functools
import html
from importlib import resources

from starlette.responses import Response

# Only the package's own files run or style the page: no CDN, no inline script.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The sign-in form is served before any session exists, so it cannot load the
# (authenticated) stylesheet: its few styles are inline, and it has no script.
SIGN_IN_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}


def security_headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        # Not `no-referrer`: under it a browser sends `Origin: null` with the
        # form's POST, and the same-origin check could not tell it from a forgery.
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("gateway.ui").joinpath("static", name).read_bytes()


def static(name: str) -> Response | None:
    """One of the page's files, or None for any other name."""
    media_type = STATIC.get(name)
    if media_type is None:
        return None
    return Response(_read(name), headers=security_headers(PAGE_CSP), media_type=media_type)


_SIGN_IN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Profile gateway: sign in</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; background: #f4f5f7; color: #1d2330; }}
form {{ max-width: 22rem; margin: 12vh auto; padding: 1.5rem; background: #fff;
       border: 1px solid #d5d9e0; border-radius: 8px; }}
h1 {{ font-size: 1.2rem; margin: 0 0 1rem; }}
label, input, button {{ display: block; width: 100%; box-sizing: border-box; }}
input {{ margin: .3rem 0 1rem; padding: .5rem; font: inherit; }}
button {{ padding: .5rem; font: inherit; background: #2456c7; color: #fff;
         border: 0; border-radius: 4px; cursor: pointer; }}
.error {{ color: #b3261e; margin: 0 0 1rem; }}
</style></head>
<body><form method="post" action="{action}" id="sign-in">
<h1>Profile gateway: {heading}</h1>
{message}<label for="token">{label} (GATEWAY_API_TOKENS)</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form></body></html>
"""


def sign_in(
    status: int = 401,
    message: str | None = None,
    *,
    action: str = "/ui/session",
    heading: str = "operator page",
    label: str = "API token with the operate scope",
) -> Response:
    shown = f'<p class="error" role="alert">{html.escape(message)}</p>\n' if message else ""
    headers = security_headers(SIGN_IN_CSP)
    headers["WWW-Authenticate"] = "Bearer"
    page = _SIGN_IN.format(
        message=shown,
        action=html.escape(action),
        heading=html.escape(heading),
        label=html.escape(label),
    )
    return Response(
        page.encode(),
        status,
        headers=headers,
        media_type="text/html; charset=utf-8",
    )
