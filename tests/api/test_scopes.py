"""Every route's scope, proved route by route, and what each scope may see.

`ROUTES` is the decision for every route the app serves; the test walks
`app.routes`, so a route added without a decision here fails until someone
makes one. For each route: no token is 401, a valid token without the scope
is 403, a token with (any one of) the scope(s) gets through.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.auth.tokens import SCOPES, Scope
from gateway.config import Settings
from tests.conftest import AUTH, SHOP_TOKEN
from tests.tokens import api_token, entry

# (method, route path) -> who may call it: "open" (no credentials), "signature"
# (the Omneo webhook's HMAC), "any" (any valid token), or the scopes of which
# the token needs one.
Rule = str | frozenset[Scope]
ROUTES: dict[tuple[str, str], Rule] = {
    ("POST", "/v1/profiles"): frozenset({"write"}),
    ("POST", "/v1/profiles/batch"): frozenset({"write"}),
    # read: in full; write and operate: the field names only (see below).
    ("GET", "/v1/profiles/{external_id:path}"): frozenset({"read", "write", "operate"}),
    ("DELETE", "/v1/profiles/{external_id:path}"): frozenset({"erase"}),
    # write: its own app's requests only (see below).
    ("GET", "/v1/requests/{request_id}"): frozenset({"write", "read"}),
    ("GET", "/v1/dead-letters"): frozenset({"operate"}),
    ("POST", "/v1/dead-letters/replay"): frozenset({"operate"}),
    ("POST", "/v1/webhooks/omneo/{event}"): "signature",
    ("GET", "/livez"): "open",
    ("GET", "/readyz"): "open",
    ("GET", "/metrics"): "open",  # unless GATEWAY_METRICS_TOKEN is set
    ("GET", "/openapi.json"): "any",
    ("GET", "/ui"): frozenset({"operate"}),
    ("POST", "/ui/session"): frozenset({"operate"}),
    ("POST", "/ui/sign-out"): frozenset({"operate"}),
    ("GET", "/ui/static/{name}"): frozenset({"operate"}),
    ("GET", "/ui/api/status"): frozenset({"operate"}),
    ("GET", "/ui/api/deliveries"): frozenset({"operate"}),
    ("GET", "/ui/api/profiles/{external_id:path}"): frozenset({"operate"}),
    ("GET", "/ui/api/mapping"): frozenset({"operate"}),
    ("POST", "/ui/api/replay"): frozenset({"operate"}),
    # The API's reference: any valid token, as /openapi.json.
    ("GET", "/docs"): "any",
    ("POST", "/docs/session"): "any",
    ("GET", "/docs/openapi.json"): "any",
    ("GET", "/docs/assets/{name}"): "any",
}
# One app per scope, each token holding that scope alone.
ONLY = {scope: api_token(f"only-{scope}") for scope in SCOPES}
SAMPLES = {"event": "profile.created", "name": "ui.js"}
BODIES: dict[str, bytes] = {
    "/v1/profiles": b'{"external_id": "scoped"}',
    "/v1/profiles/batch": b'{"profiles": [{"external_id": "scoped"}]}',
    "/v1/dead-letters/replay": b'{"backend": "omneo"}',
    "/ui/api/replay": b'{"backend": "omneo"}',
}


@pytest.fixture
def app(settings: Settings) -> Starlette:
    settings.api_tokens += "," + ",".join(entry(s, t, s) for s, t in ONLY.items())
    settings.auth_failure_limit = 0  # the throttle has its own tests
    settings.omneo_webhook_secret = "whsec-scopes"
    return create_app(settings)


@pytest.fixture
def client(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def served(app: Starlette) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route), f"{route!r}: a kind of route this test cannot walk"
        found |= {(m, route.path) for m in (route.methods or {"GET"}) - {"HEAD"}}
    return found


def call(client: TestClient, method: str, route: str, token: str | None) -> Any:
    path = re.sub(r"{(\w+)(?::\w+)?}", lambda m: SAMPLES.get(m[1], "sample"), route)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.request(method, path, headers=headers, content=BODIES.get(path, b"{}"))


def test_every_route_has_a_scope_decision(app: Starlette) -> None:
    assert served(app) == set(ROUTES)


def test_a_new_route_without_a_decision_is_caught(app: Starlette) -> None:
    async def nothing(request: Any) -> Any:
        raise AssertionError("never called")

    app.router.routes.append(Route("/v1/export", nothing, methods=["GET"]))
    assert served(app) - set(ROUTES) == {("GET", "/v1/export")}


@pytest.mark.parametrize(
    ("method", "route"), sorted(ROUTES), ids=[f"{m} {p}" for m, p in sorted(ROUTES)]
)
def test_each_route_needs_its_scope(client: TestClient, method: str, route: str) -> None:
    rule = ROUTES[method, route]
    if rule == "open":
        assert call(client, method, route, None).status_code == 200
        return
    if rule == "signature":
        for token in (None, *ONLY.values()):
            assert call(client, method, route, token).status_code == 401
        return
    assert call(client, method, route, None).status_code == 401
    for scope, token in ONLY.items():
        status = call(client, method, route, token).status_code
        if rule == "any" or scope in rule:
            assert status not in (401, 403), (scope, status)
        else:
            assert status == 403, (scope, status)


def test_a_403_names_the_missing_scope(client: TestClient) -> None:
    r = call(client, "DELETE", "/v1/profiles/{external_id:path}", SHOP_TOKEN)
    assert r.status_code == 403
    assert r.json() == {
        "error": "forbidden",
        "message": "app 'shop': this token lacks the erase scope",
    }


# --- what a scope shows ------------------------------------------------------

PERSON = {
    "external_id": "cust-9",
    "email": "jane.doe@example.com",
    "phone": "+61 412 345 678",
    "first_name": "Jane",
    "attributes": {"tier": "platinum"},
}
SHOP = {"Authorization": f"Bearer {SHOP_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_writer_reads_a_profile_as_field_names_never_values(client: TestClient) -> None:
    assert client.post("/v1/profiles", headers=AUTH, json=PERSON).status_code == 202
    full = client.get("/v1/profiles/cust-9", headers=bearer(ONLY["read"]))
    assert full.json()["profile"]["email"] == "jane.doe@example.com"
    for headers in (SHOP, bearer(ONLY["operate"])):
        r = client.get("/v1/profiles/cust-9", headers=headers)
        assert r.status_code == 200
        summary = r.json()
        assert summary["fields"] == ["attributes", "email", "first_name", "phone", "phone_country"]
        assert {b["backend"]: b["state"] for b in summary["backends"]}["omneo"] == "pending"
        for value in ("jane", "412345678", "platinum"):
            assert value not in r.text.lower()
    assert client.get("/v1/profiles/cust-9", headers=bearer(ONLY["erase"])).status_code == 403


def test_a_writer_reads_its_own_requests_only(client: TestClient) -> None:
    crm = client.post("/v1/profiles", headers=AUTH, json=PERSON).json()["request_id"]
    shop = client.post("/v1/profiles", headers=SHOP, json=PERSON).json()["request_id"]
    assert client.get(f"/v1/requests/{shop}", headers=SHOP).status_code == 200
    # Another app's request is answered as if it did not exist.
    other = client.get(f"/v1/requests/{crm}", headers=SHOP)
    assert other.status_code == 404
    assert other.json() == client.get("/v1/requests/nothing", headers=SHOP).json()
    for rid in (crm, shop):
        assert client.get(f"/v1/requests/{rid}", headers=bearer(ONLY["read"])).status_code == 200


def test_only_the_erase_scope_erases(client: TestClient) -> None:
    client.post("/v1/profiles", headers=AUTH, json=PERSON)
    for token in (SHOP_TOKEN, ONLY["read"], ONLY["operate"]):
        assert client.delete("/v1/profiles/cust-9", headers=bearer(token)).status_code == 403
    full = client.get("/v1/profiles/cust-9", headers=AUTH).json()
    assert full["profile"]["email"] == "jane.doe@example.com"  # untouched
    erased = client.delete("/v1/profiles/cust-9", headers=bearer(ONLY["erase"]))
    assert erased.status_code == 200 and erased.json()["writes_erased"] == 1


def test_the_operator_page_refuses_a_writer_at_sign_in(client: TestClient) -> None:
    html = {"Accept": "text/html"}
    r = client.post("/ui/session", data={"token": SHOP_TOKEN}, headers=html)
    assert r.status_code == 403
    assert "lacks the operate scope" in r.text
    assert "set-cookie" not in r.headers
    ok = client.post("/ui/session", data={"token": ONLY["operate"]}, follow_redirects=False)
    assert ok.status_code == 303 and "set-cookie" in ok.headers
