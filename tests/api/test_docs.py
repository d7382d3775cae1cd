"""`/docs`: Swagger UI on the OpenAPI document, behind the same auth as `/openapi.json`.

The browser test (tests/ui/test_docs_browser.py) checks that the page renders;
these check who gets it, and what the page may load.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.ui import session
from tests.conftest import AUTH, SHOP_TOKEN, TOKEN

HTML = {"Accept": "text/html,application/xhtml+xml"}
DOCS_ROUTES = ("/docs", "/docs/openapi.json", "/docs/assets/swagger-ui-bundle.js")


@pytest.fixture
def anon(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("path", DOCS_ROUTES)
def test_without_credentials_docs_are_refused_like_the_openapi_document(
    anon: TestClient, path: str
) -> None:
    reference = anon.get("/openapi.json")
    r = anon.get(path)
    assert reference.status_code == r.status_code == 401
    assert r.headers["www-authenticate"] == reference.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == reference.json()["error"] == "unauthorized"
    wrong = {"Authorization": "Bearer wrong"}
    assert anon.get(path, headers=wrong).status_code == 401
    # Another kind's cookie, even a real one, is no docs session.
    signed = anon.post("/ui/session", data={"token": TOKEN}, follow_redirects=False)
    ui_cookie = signed.cookies[session.COOKIE]
    anon.cookies.clear()
    anon.cookies.set(session.DOCS.cookie, ui_cookie)
    assert anon.get(path).status_code == 401


def test_a_browser_without_a_session_gets_the_sign_in_form(anon: TestClient) -> None:
    r = anon.get("/docs", headers=HTML)
    assert r.status_code == 401
    assert '<form method="post" action="/docs/session"' in r.text
    assert "swagger-ui" not in r.text
    assert "script-src" not in r.headers["content-security-policy"]


def test_any_valid_token_opens_the_docs_as_it_opens_the_document(anon: TestClient) -> None:
    # shop's token has no scope beyond write: /openapi.json takes it, so does /docs.
    bearer = {"Authorization": f"Bearer {SHOP_TOKEN}"}
    assert anon.get("/openapi.json", headers=bearer).status_code == 200
    page = anon.get("/docs", headers=bearer)
    assert page.status_code == 200
    assert '<div id="swagger-ui"></div>' in page.text
    assert anon.get("/docs/openapi.json", headers=bearer).json() == (
        anon.get("/openapi.json", headers=AUTH).json()
    )


def test_sign_in_gives_a_docs_cookie_that_opens_the_page_and_its_files(
    anon: TestClient,
) -> None:
    r = anon.post("/docs/session", data={"token": SHOP_TOKEN}, headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/docs"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{session.DOCS.cookie}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/docs" in cookie
    assert SHOP_TOKEN not in cookie

    page = anon.get("/docs", headers=HTML)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "connect-src 'self';" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    assert "<script>" not in page.text and "http" not in page.text.replace("http-equiv", "")
    js = anon.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert len(js.content) > 500_000  # Swagger UI itself, from the package
    assert anon.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert "/docs/openapi.json" in anon.get("/docs/assets/docs.js").text
    assert anon.get("/docs/openapi.json").json()["openapi"] == "3.1.0"
    assert anon.get("/docs/assets/routes.py").status_code == 404
    assert anon.get("/docs/assets/..%2Froutes.py").status_code == 404
    # The docs cookie is good for the docs only: the operator page refuses it.
    value = anon.cookies[session.DOCS.cookie]
    anon.cookies.clear()
    anon.cookies.set(session.COOKIE, value)
    assert anon.get("/ui/api/status").status_code == 401


def test_a_wrong_token_gets_the_form_again(anon: TestClient) -> None:
    r = anon.post("/docs/session", data={"token": "nope"}, headers=HTML, follow_redirects=False)
    assert r.status_code == 401
    assert "not one of GATEWAY_API_TOKENS" in r.text
    assert session.DOCS.cookie not in r.headers.get("set-cookie", "")
    assert anon.get("/docs").status_code == 401


def test_revoking_sessions_ends_docs_sessions(anon: TestClient) -> None:
    anon.post("/docs/session", data={"token": TOKEN}, headers=HTML)
    assert anon.get("/docs/openapi.json").status_code == 200
    store = anon.app.state.ctx.store  # type: ignore[attr-defined]
    anon.portal.call(store.end_all_ui_sessions)  # type: ignore[union-attr]
    assert anon.get("/docs/openapi.json").status_code == 401
