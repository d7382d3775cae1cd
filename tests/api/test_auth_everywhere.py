"""Nobody gets in without credentials, on any route, now or later.

The routes are read from the app itself, so a route added without auth (a
future `/ui` included, as a `Route` or a `Mount`) fails here until it checks a
token or is added, on purpose, to `OPEN`. Only the probes are open; `/metrics`
is open unless GATEWAY_METRICS_TOKEN is set. `/openapi.json` needs a token like
the API it describes. The Omneo webhooks authenticate by HMAC signature instead
of a bearer token; a replayed signed event is accepted and changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.logs import JsonFormatter
from gateway.store.base import DeliveryResult
from gateway.webhooks.applier import WebhookApplier
from tests.conftest import AUTH, TOKEN, count

Rows = Callable[[str], list[tuple[Any, ...]]]

# Orchestrators and Prometheus poll these without credentials (README, Operations).
OPEN = {"/livez", "/readyz", "/metrics"}
WEBHOOK_SECRET = "whsec-auth-test"
METRICS_TOKEN = "scrape-secret-1-" + "0" * 32
SIGNATURE = "X-Omneo-Hmac-SHA256"
# A path parameter's sample value; the webhook's event must be a real one, so the
# request is refused for its credentials and not for its name.
SAMPLES = {"event": "profile.created"}
BODIES: dict[str, bytes] = {
    "/v1/profiles": b'{"external_id": "intruder"}',
    "/v1/profiles/batch": b'{"profiles": [{"external_id": "intruder"}]}',
    "/v1/dead-letters/replay": b'{"backend": "omneo"}',
}
NOT_CREDENTIALS: dict[str, str | bytes | None] = {
    "none": None,
    "wrong token": "Bearer wrong",
    "empty bearer": "Bearer ",
    "scheme only": "Bearer",
    "basic auth": "Basic " + base64.b64encode(f"crm:{TOKEN}".encode()).decode(),
    "token without scheme": TOKEN,
    "another scheme": f"Token {TOKEN}",
    "token with a suffix": f"Bearer {TOKEN}x",
    "token prefix": f"Bearer {TOKEN[:-1]}",
    "two tokens": f"Bearer wrong {TOKEN}",
    "non-ASCII": "Bearer crm-tökén".encode("latin-1"),
    "the metrics token": f"Bearer {METRICS_TOKEN}",
    "the webhook secret": f"Bearer {WEBHOOK_SECRET}",
}


@pytest.fixture
def app(settings: Settings) -> Starlette:
    settings.omneo_webhook_secret = WEBHOOK_SECRET
    settings.metrics_token = METRICS_TOKEN
    # These tests present hundreds of wrong credentials from one address on
    # purpose; the throttle that would answer them 429 has tests of its own.
    settings.auth_failure_limit = 0
    return create_app(settings)


@pytest.fixture
def guarded(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def endpoints(app: Starlette) -> list[tuple[str, str]]:
    """(method, concrete path) of every route the app serves, probes included."""
    found: list[tuple[str, str]] = []
    routes: list[BaseRoute] = list(app.routes)
    for route in routes:
        if isinstance(route, Route):
            path = re.sub(
                r"{(\w+)(?::\w+)?}", lambda m: SAMPLES.get(m[1], "sample"), route.path_format
            )
            found += [(m, path) for m in sorted((route.methods or {"GET"}) - {"HEAD"})]
        elif isinstance(route, Mount):
            found.append(("GET", route.path.rstrip("/") + "/"))
        else:
            raise AssertionError(f"{route!r}: a kind of route this test cannot check yet")
    return found


def protected(app: Starlette) -> list[tuple[str, str]]:
    return [(m, p) for m, p in endpoints(app) if p not in OPEN]


def send(client: TestClient, method: str, path: str, authorization: str | bytes | None) -> Any:
    headers: dict[str, str | bytes] = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return client.request(method, path, headers=headers, content=BODIES.get(path, b"{}"))


def let_in(app: Starlette, client: TestClient, authorization: str | bytes | None) -> list[str]:
    """Every protected endpoint that did not answer 401 to `authorization`."""
    answers = []
    for method, path in protected(app):
        r = send(client, method, path, authorization)
        is_error = r.headers.get("content-type") == "application/json" and "error" in r.json()
        if r.status_code != 401 or not is_error:
            answers.append(f"{method} {path}: {r.status_code}")
    return answers


def test_a_route_added_without_auth_would_be_caught(app: Starlette, guarded: TestClient) -> None:
    async def page(request: Request) -> Response:
        return PlainTextResponse("hello")

    # Not `/ui`: the real operator page is there, and would shadow this one.
    app.router.routes.append(Route("/ui-unguarded", page))
    app.router.routes.append(Mount("/ui-assets", routes=[Route("/", page)]))
    assert let_in(app, guarded, None) == ["GET /ui-unguarded: 200", "GET /ui-assets/: 200"]


def test_the_routes_are_enumerated(app: Starlette) -> None:
    found = endpoints(app)
    # Checks the enumeration itself, not an allow-list: new routes need no edit here.
    assert {("POST", "/v1/profiles"), ("GET", "/openapi.json"), ("GET", "/livez")} <= set(found)
    assert ("POST", "/v1/webhooks/omneo/profile.created") in found
    assert len(protected(app)) >= 8


@pytest.mark.parametrize("authorization", NOT_CREDENTIALS.values(), ids=NOT_CREDENTIALS.keys())
def test_every_route_but_the_probes_refuses_without_credentials(
    app: Starlette, guarded: TestClient, rows: Rows, authorization: str | bytes | None
) -> None:
    assert let_in(app, guarded, authorization) == []
    for table in ("requests", "profile_writes", "deliveries", "webhook_events"):
        assert count(rows, table) == 0, table


def test_the_right_token_opens_every_bearer_route(app: Starlette, guarded: TestClient) -> None:
    """The control for the test above: those 401s were about the credentials."""
    for method, path in protected(app):
        r = send(guarded, method, path, f"Bearer {TOKEN}")
        if path.startswith("/v1/webhooks/"):
            assert r.status_code == 401  # a bearer token is not a webhook signature
        else:
            assert r.status_code != 401, f"{method} {path}"
            assert "www-authenticate" not in r.headers


def test_401_says_how_to_authenticate(app: Starlette, guarded: TestClient) -> None:
    for method, path in protected(app):
        if not path.startswith("/v1/webhooks/"):
            assert send(guarded, method, path, None).headers["www-authenticate"] == "Bearer"


def test_the_probes_stay_open_and_metrics_takes_only_its_token(guarded: TestClient) -> None:
    assert guarded.get("/livez").status_code == 200
    assert guarded.get("/readyz").status_code == 200
    for name, authorization in NOT_CREDENTIALS.items():
        if name == "the metrics token":
            continue  # the one credential /metrics takes, checked below
        headers: dict[str, str | bytes] = {}
        if authorization is not None:
            headers["Authorization"] = authorization
        assert guarded.get("/metrics", headers=headers).status_code == 401
    assert guarded.get("/metrics", headers=AUTH).status_code == 401  # an app token is not it
    ok = guarded.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200


def test_metrics_are_open_without_a_metrics_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200


# --- the Omneo webhooks: an HMAC signature instead of a token --------------

HOOK = "/v1/webhooks/omneo/profile.created"


def _body_whose_base64_signature_has_url_unsafe_characters() -> bytes:
    for i in range(1000):
        body = b'{"id": %d, "email": "hook@example.com"}' % (2000 + i)
        sig = base64.b64encode(_digest(body)).decode()
        if "+" in sig or "/" in sig:
            return body
    raise AssertionError("unreachable: about 1 in 20 signatures lacks + and /")


def _digest(body: bytes, key: str = WEBHOOK_SECRET) -> bytes:
    return hmac.new(key.encode(), body, hashlib.sha256).digest()


BODY = _body_whose_base64_signature_has_url_unsafe_characters()
GOOD = _digest(BODY).hex()
BAD_SIGNATURES: dict[str, dict[str, str]] = {
    "missing": {},
    "empty": {SIGNATURE: ""},
    "random hex": {SIGNATURE: "ab" * 32},
    "truncated": {SIGNATURE: GOOD[:-2]},
    "one digit off": {SIGNATURE: GOOD[:-1] + ("0" if GOOD[-1] != "0" else "1")},
    "doubled": {SIGNATURE: GOOD + GOOD},
    "base64 without padding": {SIGNATURE: base64.b64encode(_digest(BODY)).decode().rstrip("=")},
    "base64url": {SIGNATURE: base64.urlsafe_b64encode(_digest(BODY)).decode()},
    "base32": {SIGNATURE: base64.b32encode(_digest(BODY)).decode()},
    "wrong secret": {SIGNATURE: _digest(BODY, "other-secret").hex()},
    "the API token as secret": {SIGNATURE: _digest(BODY, TOKEN).hex()},
    "plain SHA-256": {SIGNATURE: hashlib.sha256(BODY).hexdigest()},
    "HMAC-SHA1": {SIGNATURE: hmac.new(WEBHOOK_SECRET.encode(), BODY, hashlib.sha1).hexdigest()},
    "key and body swapped": {
        SIGNATURE: hmac.new(BODY, WEBHOOK_SECRET.encode(), hashlib.sha256).hexdigest()
    },
    "prefix, wrong digest": {SIGNATURE: "sha256=" + "cd" * 32},
    "the secret itself": {SIGNATURE: WEBHOOK_SECRET},
    "right value, other header": {"X-Signature": GOOD},
    "a bearer token instead": {"Authorization": f"Bearer {TOKEN}"},
}
TAMPERED = {
    "a byte appended": BODY + b" ",
    "email changed": BODY.replace(b"hook@", b"evil@"),
    "empty body": b"",
    "prefix only": BODY[:10],
}


@pytest.mark.parametrize("headers", BAD_SIGNATURES.values(), ids=BAD_SIGNATURES.keys())
def test_a_missing_or_wrong_signature_is_401_and_stores_nothing(
    guarded: TestClient, rows: Rows, headers: dict[str, str]
) -> None:
    for path in (HOOK, "/v1/webhooks/omneo/profile.updated", "/v1/webhooks/omneo/no.such"):
        r = guarded.post(path, content=BODY, headers=headers)
        assert r.status_code == 401, path
        assert r.json()["error"] == "bad_signature"
    assert count(rows, "webhook_events") == 0


@pytest.mark.parametrize("body", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_body_changed_after_signing_is_401(guarded: TestClient, rows: Rows, body: bytes) -> None:
    r = guarded.post(HOOK, content=body, headers={SIGNATURE: GOOD})
    assert r.status_code == 401
    assert count(rows, "webhook_events") == 0


@pytest.mark.parametrize(
    "signature",
    [GOOD, GOOD.upper(), base64.b64encode(_digest(BODY)).decode(), f"sha256={GOOD}"],
    ids=["hex", "HEX", "base64", "sha256= prefix"],
)
def test_the_right_signature_is_taken(guarded: TestClient, signature: str) -> None:
    r = guarded.post(HOOK, content=BODY, headers={SIGNATURE: signature})
    assert r.status_code == 200
    assert r.json()["status"] == "stored"
    # Only a signed request learns which event names exist.
    r = guarded.post("/v1/webhooks/omneo/no.such", content=BODY, headers={SIGNATURE: signature})
    assert r.status_code == 404


def test_a_replayed_signed_event_changes_nothing(
    app: Starlette, guarded: TestClient, settings: Settings, rows: Rows
) -> None:
    """Omneo sends no timestamp or event id, so a replay cannot be told from a
    retry: it is answered 200 and deduplicated by the body's hash."""
    store = app.state.ctx.store
    body = b'{"id": 7001, "email": "replay@example.com", "updated_at": "2026-11-24T10:00:00Z"}'
    written = guarded.post(
        "/v1/profiles",
        headers=AUTH,
        json={"external_id": "r", "email": "replay@example.com", "targets": ["omneo"]},
    )
    assert written.status_code == 202
    # What the dispatcher does when Omneo takes the batch.
    [claim] = guarded.portal.call(store.claim, "omneo", 10, "w", 60)  # type: ignore[union-attr]
    result = DeliveryResult(claim.delivery_id, "accepted", match_key="replay@example.com")
    guarded.portal.call(store.record, "w", [result])  # type: ignore[union-attr]
    applier = WebhookApplier(store, settings, app.state.ctx.metrics)

    def snapshot() -> list[list[tuple[Any, ...]]]:
        return [
            rows("SELECT * FROM deliveries ORDER BY id"),
            rows("SELECT * FROM backend_ids ORDER BY external_id"),
            rows("SELECT * FROM webhook_events ORDER BY id"),
        ]

    headers = {SIGNATURE: hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()}
    first = guarded.post(HOOK, content=body, headers=headers)
    assert first.json()["status"] == "stored"
    guarded.portal.call(applier.run_once)  # type: ignore[union-attr]
    after_first = snapshot()
    assert rows("SELECT state FROM deliveries") == [("confirmed",)]
    assert rows("SELECT backend_id FROM backend_ids") == [("7001",)]

    for _ in range(3):
        again = guarded.post(HOOK, content=body, headers=headers)
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
        guarded.portal.call(applier.run_once)  # type: ignore[union-attr]
    assert snapshot() == after_first
    metrics = guarded.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    assert 'gateway_webhooks_total{event="profile.created",result="duplicate"} 3.0' in metrics


def test_a_signed_body_that_is_not_json_is_400_every_time(guarded: TestClient, rows: Rows) -> None:
    body = b"\x00not json"
    headers = {SIGNATURE: hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()}
    for _ in range(2):
        r = guarded.post(HOOK, content=body, headers=headers)
        assert r.status_code == 400
        assert r.json()["error"] == "bad_json"
    assert count(rows, "webhook_events") == 1  # kept once, for whoever investigates


# --- credentials and personal data in logs --------------------------------


@pytest.mark.parametrize(
    ("extra", "hidden"),
    [
        ({"authorization": f"Bearer {TOKEN}"}, TOKEN),
        ({"external_id": "jane@example.com"}, "jane@example.com"),
        ({"external_id": "+61412345678"}, "+61412345678"),
        ({"emails": ["jane@example.com"]}, "jane@example.com"),
        ({"profile": {"phone": "+61 412 345 678"}}, "412 345 678"),
    ],
    ids=["bearer", "email as id", "phone as id", "in a list", "in a dict"],
)
def test_the_log_formatter_masks_credentials_and_personal_data(
    extra: dict[str, Any], hidden: str
) -> None:
    record = logging.makeLogRecord({"name": "gateway", "msg": "m", **extra})
    line = JsonFormatter().format(record)
    assert hidden not in line
    assert "[" in line  # the value is there, masked


def test_digit_ids_stay_readable_in_logs() -> None:
    record = logging.makeLogRecord({"name": "gateway", "msg": "m", "backend_id": "4930123456"})
    assert '"backend_id": "4930123456"' in JsonFormatter().format(record)
