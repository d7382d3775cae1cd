"""The operator page over HTTP: sign-in, the session cookie, CSRF, the JSON it polls."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.schema import Backend
from gateway.ui import session
from gateway.ui.routes import routes
from tests.conftest import AUTH, SHOP_TOKEN, TOKEN
from tests.tokens import entry
from tests.ui.seed import seed

UI = {"X-Gateway-UI": "1"}
HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def app(settings: Settings) -> Starlette:
    return create_app(settings)


@pytest.fixture
def anon(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def signed_in(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app) as c:
        r = c.post("/ui/session", data={"token": TOKEN}, follow_redirects=False)
        assert r.status_code == 303
        yield c


def seeded(
    client: TestClient, app: Starlette, external_id: str, backend: Backend, *args: Any
) -> int:
    """`seed` in the app's own store, on the client's event loop."""
    assert client.portal is not None

    async def go() -> int:
        return await seed(app.state.ctx.store, external_id, backend, *args)

    return client.portal.call(go)


def ui_endpoints() -> list[tuple[str, str]]:
    found = []
    for route in routes():
        assert isinstance(route, Route)
        path = re.sub(r"{(\w+)(?::\w+)?}", "ui.js", route.path_format)
        found += [(m, path) for m in sorted((route.methods or {"GET"}) - {"HEAD"})]
    return found


def forged_cookies() -> dict[str, str]:
    now = time.time()
    expires = int(now + session.SESSION_SECONDS)
    good = session.new_session(TOKEN, "crm", "sid", expires)
    name, until, sid, signature = good.split(".")
    return {
        "garbage": "not-a-session",
        "signed with another key": session.new_session("some-other-token", "crm", "sid", expires),
        "another app's name": f"{session.new_session(TOKEN, 'shop', 'sid', expires).split('.')[0]}"
        f".{until}.{sid}.{signature}",
        "expiry pushed out": f"{name}.{int(until) + 10}.{sid}.{signature}",
        "another session id": f"{name}.{until}.other.{signature}",
        "expired": session.new_session(TOKEN, "crm", "sid", int(now) - 1),
        "the token itself": TOKEN,
        # Signed right, but no sign-in recorded it in the store.
        "never signed in": good,
    }


@pytest.mark.parametrize("cookie", forged_cookies().values(), ids=forged_cookies().keys())
def test_every_ui_route_is_401_without_a_valid_session(anon: TestClient, cookie: str) -> None:
    for method, path in ui_endpoints():
        for cookies in ({}, {session.COOKIE: cookie}):
            anon.cookies.clear()
            anon.cookies.update(cookies)
            r = anon.request(method, path, headers={**UI, "Content-Type": "application/json"})
            assert r.status_code == 401, (method, path, cookies)
            assert r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"


def test_a_browser_without_a_session_gets_the_sign_in_form(anon: TestClient) -> None:
    r = anon.get("/ui", headers=HTML)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/ui/session"' in r.text
    assert 'name="token" type="password"' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src" not in csp and "frame-ancestors 'none'" in csp


def test_sign_in_sets_a_signed_http_only_strict_cookie(anon: TestClient) -> None:
    r = anon.post("/ui/session", data={"token": TOKEN}, headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{session.COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    assert TOKEN not in cookie

    page = anon.get("/ui", headers=HTML)
    assert page.status_code == 200
    assert '<script src="/ui/static/ui.js" defer></script>' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    js = anon.get("/ui/static/ui.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "X-Gateway-UI" in js.text
    assert anon.get("/ui/static/ui.css").headers["content-type"].startswith("text/css")
    assert anon.get("/ui/static/..%2Fsession.py").status_code == 404
    assert anon.get("/ui/static/routes.py").status_code == 404


def test_over_https_the_cookie_is_secure(app: Starlette) -> None:
    with TestClient(app, base_url="https://gateway.example") as c:
        r = c.post("/ui/session", data={"token": TOKEN}, follow_redirects=False)
        assert "Secure" in r.headers["set-cookie"]


def test_a_wrong_token_gets_the_form_again_and_no_cookie(anon: TestClient) -> None:
    for token in ("wrong", f"{TOKEN}x", "", " "):
        r = anon.post("/ui/session", data={"token": token}, headers=HTML)
        assert r.status_code == 401
        assert "That token is not one of GATEWAY_API_TOKENS." in r.text
        assert "set-cookie" not in r.headers
    r = anon.post("/ui/session", data={"token": "wrong"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_a_cross_site_sign_in_is_refused(anon: TestClient) -> None:
    r = anon.post("/ui/session", data={"token": TOKEN}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert "set-cookie" not in r.headers
    # What a browser sends for the page's own form (its Referrer-Policy keeps it
    # from hiding the origin as `null`).
    own = anon.post(
        "/ui/session",
        data={"token": TOKEN},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert own.status_code == 303
    assert anon.get("/ui").headers["referrer-policy"] == "same-origin"


def test_a_session_ends_with_its_token(settings: Settings, app: Starlette) -> None:
    with TestClient(app) as c:
        c.post("/ui/session", data={"token": TOKEN}, follow_redirects=False)
        assert c.get("/ui/api/status").status_code == 200
        cookie = c.cookies[session.COOKIE]
    settings.api_tokens = entry("shop", SHOP_TOKEN)  # the crm token is withdrawn
    with TestClient(create_app(settings)) as c:
        c.cookies.update({session.COOKIE: cookie})
        assert c.get("/ui/api/status").status_code == 401


def test_replay_by_cookie_needs_the_page_header(app: Starlette, signed_in: TestClient) -> None:
    dead = seeded(signed_in, app, "p-1", "omneo", "dead", "gave up")
    body = {"delivery_id": dead, "state": "dead"}
    refused = signed_in.post("/ui/api/replay", json=body)
    assert refused.status_code == 403
    cross = signed_in.post("/ui/api/replay", json=body, headers={**UI, "Origin": "http://evil"})
    assert cross.status_code == 403
    assert (
        signed_in.get("/ui/api/deliveries?state=dead").json()["deliveries"][0]["delivery_id"]
        == dead
    )

    done = signed_in.post("/ui/api/replay", json=body, headers=UI)
    assert done.status_code == 200
    assert done.json() == {"requeued": [dead], "superseded": []}
    assert signed_in.get("/ui/api/deliveries?state=dead").json()["deliveries"] == []
    profile = signed_in.get("/ui/api/profiles/p-1").json()
    omneo = next(b for b in profile["backends"] if b["backend"] == "omneo")
    assert (omneo["state"], omneo["attempts"]) == ("pending", 0)


def test_replay_logs_who_did_it(
    app: Starlette, signed_in: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    seeded(signed_in, app, "p-1", "import_batch", "failed", "refused")
    with caplog.at_level("INFO", logger="gateway.ui"):
        r = signed_in.post(
            "/ui/api/replay", json={"backend": "import_batch", "state": "failed"}, headers=UI
        )
    assert len(r.json()["requeued"]) == 1
    [record] = [r for r in caplog.records if r.getMessage() == "replay"]
    assert (record.app, record.via, record.backend) == ("crm", "operator page", "import_batch")  # type: ignore[attr-defined]


def test_a_bearer_token_needs_no_page_header(app: Starlette, anon: TestClient) -> None:
    dead = seeded(anon, app, "p-1", "ocamba", "dead", "gave up")
    r = anon.post("/ui/api/replay", json={"delivery_id": dead}, headers=AUTH)
    assert r.json()["requeued"] == [dead]


def test_replay_checks_its_body(signed_in: TestClient) -> None:
    for body, status in [
        ({}, 422),
        ({"delivery_id": 1, "backend": "omneo"}, 422),
        ({"backend": "nope"}, 422),
        ({"delivery_id": 1, "state": "confirmed"}, 422),
    ]:
        assert signed_in.post("/ui/api/replay", json=body, headers=UI).status_code == status
    bad = signed_in.post(
        "/ui/api/replay", content=b"{", headers={**UI, "Content-Type": "application/json"}
    )
    assert bad.status_code == 400


def test_the_status_json(app: Starlette, signed_in: TestClient) -> None:
    seeded(signed_in, app, "p-1", "omneo", "dead", "HTTP 400 for jane@example.com")
    r = signed_in.get("/ui/api/status")
    assert r.headers["cache-control"] == "no-store"
    view = r.json()
    assert set(view) == {
        "generated_at",
        "dispatcher",
        "error_window_seconds",
        "backends",
        "recent_failures",
    }
    assert view["dispatcher"] is False  # the API tests run without one
    assert [b["backend"] for b in view["backends"]] == ["ocamba", "omneo", "import_batch"]
    omneo = view["backends"][1]
    assert omneo == {
        "backend": "omneo",
        "circuit": "unknown",
        "error_ratio": None,
        "outcomes": 0,
        "rate_limit": None,
        "queue_depth": 0,
        "queue_bulk": 0,
        "oldest_pending_seconds": 0.0,
        "dead": 1,
        "failed": 0,
        "unconfirmed": 0,
    }
    [failure] = view["recent_failures"]
    assert failure["last_error"] == "HTTP 400 for [email]"
    assert "jane" not in r.text


def test_deliveries_page_newest_first(app: Starlette, signed_in: TestClient) -> None:
    ids = [seeded(signed_in, app, f"p-{i}", "omneo", "unconfirmed") for i in range(3)]
    first = signed_in.get("/ui/api/deliveries?state=unconfirmed&backend=omneo&limit=2").json()
    assert [d["delivery_id"] for d in first["deliveries"]] == [ids[2], ids[1]]
    assert first["next_before"] == ids[1]
    rest = signed_in.get(f"/ui/api/deliveries?state=unconfirmed&before={ids[1]}&limit=2").json()
    assert [d["delivery_id"] for d in rest["deliveries"]] == [ids[0]]
    assert rest["next_before"] is None
    for query in ("state=confirmed", "backend=nope", "limit=0", "limit=201", "before=x"):
        assert signed_in.get(f"/ui/api/deliveries?{query}").status_code == 422, query


def test_a_profile_shows_its_states_and_field_names_not_its_data(signed_in: TestClient) -> None:
    written = signed_in.post(
        "/v1/profiles",
        headers=AUTH,
        json={
            "external_id": "cust/42",
            "email": "Jane@Example.com",
            "phone": "+61 412 345 678",
            "attributes": {"tier": "gold"},
            "targets": ["omneo", "import_batch"],
        },
    )
    assert written.status_code == 202
    r = signed_in.get("/ui/api/profiles/cust%2F42")
    assert r.status_code == 200
    profile = r.json()
    assert profile["external_id"] == "cust/42"
    assert profile["fields"] == ["attributes", "email", "phone", "phone_country"]
    states = {b["backend"]: (b["state"], b["attempts"]) for b in profile["backends"]}
    assert states == {"ocamba": (None, 0), "omneo": ("pending", 0), "import_batch": ("pending", 0)}
    # The phone in any form it could be shown in (the request id is random hex,
    # so a short run of digits such as "412" can turn up there by chance).
    for secret in ("jane@example.com", "412345678", "412 345 678", "gold"):
        assert secret not in r.text.lower()
    assert signed_in.get("/ui/api/profiles/nobody").status_code == 404


def test_sign_out_ends_the_session_in_the_browser(signed_in: TestClient) -> None:
    assert signed_in.post("/ui/sign-out").status_code == 403  # needs the page's header
    r = signed_in.post("/ui/sign-out", headers=UI)
    assert r.status_code == 204
    assert f'{session.COOKIE}=""' in r.headers["set-cookie"]
    assert signed_in.get("/ui", headers=HTML).status_code == 401


def test_the_mapping_in_force_is_shown_read_only(settings: Settings, tmp_path: Any) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[ocamba]\nexclude = ["phone"]\n[omneo]\nattribute_namespace = "crm"\n')
    app = create_app(msgspec.structs.replace(settings, mapping_file=str(path)))
    with TestClient(app) as c:
        assert c.get("/ui/api/mapping").status_code == 401
        body = c.get("/ui/api/mapping", headers=AUTH).json()
        assert c.post("/ui/api/mapping", headers=AUTH).status_code == 405
    assert body["source"] == str(path)
    assert body["mapping"]["ocamba"]["exclude"] == ["phone"]
    assert body["mapping"]["omneo"]["attribute_namespace"] == "crm"
    assert body["mapping"]["omneo"]["match_criteria"] == "email"
    assert body["mapping"]["import_batch"]["fields"]["external_id"] == "external_id"


def test_without_a_file_the_page_shows_the_built_in_mapping(signed_in: TestClient) -> None:
    body = signed_in.get("/ui/api/mapping").json()
    assert body["source"] is None
    assert body["mapping"]["import_batch"]["matching"] == "email"
