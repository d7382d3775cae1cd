"""Status endpoints, health, metrics, OpenAPI, and failure of the store itself."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.store.base import StoreError
from gateway.store.sqlite import SQLiteStore
from tests.conftest import AUTH, count

Rows = Callable[[str], list[tuple[Any, ...]]]


def test_request_status_lists_each_profile_and_backend(client: TestClient) -> None:
    r = client.post(
        "/v1/profiles/batch",
        headers=AUTH,
        json={
            "profiles": [{"external_id": "a"}, {"external_id": "b"}],
            "targets": ["omneo", "import_batch"],
        },
    )
    view = client.get(f"/v1/requests/{r.json()['request_id']}", headers=AUTH)
    assert view.status_code == 200
    body = view.json()
    assert body["app"] == "crm"
    assert body["targets"] == ["omneo", "import_batch"]
    assert [p["external_id"] for p in body["profiles"]] == ["a", "b"]
    for p in body["profiles"]:
        assert [(d["backend"], d["state"], d["attempts"]) for d in p["deliveries"]] == [
            ("omneo", "pending", 0),
            ("import_batch", "pending", 0),
        ]
        assert all(d["last_error"] is None and d["backend_id"] is None for d in p["deliveries"])


def test_profile_status_shows_the_latest_write(client: TestClient) -> None:
    client.post("/v1/profiles", headers=AUTH, json={"external_id": "p", "first_name": "Old"})
    second = client.post(
        "/v1/profiles",
        headers=AUTH,
        json={"external_id": "p", "first_name": "New", "targets": ["omneo"]},
    )
    body = client.get("/v1/profiles/p", headers=AUTH).json()
    assert body["last_request_id"] == second.json()["request_id"]
    assert body["profile"]["first_name"] == "New"
    assert set(body["backends"]) == {"ocamba", "omneo", "import_batch"}
    assert body["backend_ids"] == {}


def test_unknown_ids_are_404(client: TestClient) -> None:
    assert client.get("/v1/requests/nope", headers=AUTH).status_code == 404
    assert client.get("/v1/profiles/nope", headers=AUTH).json()["error"] == "not_found"


def test_health_endpoints(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "ok"}
    assert client.get("/readyz").json()["store"] == "ok"


class _StoreThatLostItsDisk(SQLiteStore):
    async def ping(self) -> None:
        raise StoreError("disk I/O error at /secret/path/gateway.db (host db-7.internal)")


def test_readyz_fails_when_the_store_cannot_answer(settings: Settings, db_path: Any) -> None:
    app = create_app(settings, store=_StoreThatLostItsDisk(db_path))
    with TestClient(app) as client:
        r = client.get("/readyz")
        assert r.status_code == 503
        # The cause goes to the log, not to whoever asks (the probe is unauthenticated).
        assert r.json() == {"status": "unavailable", "store": "store unavailable"}
        assert "secret" not in r.text and "db-7" not in r.text
        assert client.get("/livez").status_code == 200


def test_metrics_count_requests_by_app_and_outcome(client: TestClient) -> None:
    client.post("/v1/profiles/batch", headers=AUTH, json={"profiles": [{"external_id": "a"}] * 1})
    client.post(
        "/v1/profiles/batch",
        headers=AUTH,
        json={"profiles": [{"external_id": "b"}, {"external_id": "c"}]},
    )
    client.post("/v1/profiles", headers=AUTH, json={"email": "missing-id@example.com"})
    client.post("/v1/profiles", json={"external_id": "x"})
    text = client.get("/metrics").text
    assert 'gateway_inbound_requests_total{app="crm",outcome="accepted"} 2.0' in text
    assert 'gateway_inbound_profiles_total{app="crm",outcome="accepted"} 3.0' in text
    assert 'gateway_inbound_requests_total{app="crm",outcome="invalid"} 1.0' in text
    assert 'gateway_inbound_requests_total{app="unknown",outcome="unauthorized"} 1.0' in text
    assert (
        'gateway_http_requests_total{method="POST",route="/v1/profiles/batch",status="202"} 2.0'
        in text
    )
    assert "gateway_store_write_seconds_count 2.0" in text
    assert (
        'gateway_http_request_seconds_bucket{le="+Inf",method="POST",route="/v1/profiles"}' in text
    )


def test_openapi_is_generated_from_the_structs(client: TestClient) -> None:
    doc = client.get("/openapi.json", headers=AUTH).json()
    schemas = doc["components"]["schemas"]
    assert schemas["ProfileWrite"]["required"] == ["external_id"]
    assert "phone_country" not in schemas["ProfileWrite"]["properties"]
    assert schemas["BatchWrite"]["properties"]["profiles"]["maxItems"] == 1000
    post = doc["paths"]["/v1/profiles/batch"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/BatchWrite"
    )
    assert set(post["responses"]) >= {"202", "400", "401", "409", "413", "422"}


def test_full_disk_is_503_and_stores_nothing(client: TestClient, rows: Rows) -> None:
    store: SQLiteStore = client.app.state.ctx.store  # type: ignore[attr-defined]
    assert store._writer is not None
    writer_conn: sqlite3.Connection = store._writer._conn
    pages = writer_conn.execute("PRAGMA page_count").fetchone()[0]
    # The database may not grow: every insert fails with SQLITE_FULL.
    writer_conn.execute(f"PRAGMA max_page_count = {pages}")
    big = [{"external_id": f"id-{i}", "first_name": "x" * 200} for i in range(200)]
    r = client.post("/v1/profiles/batch", headers=AUTH, json={"profiles": big})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert count(rows, "requests") == 0
    assert count(rows, "profile_writes") == 0
    writer_conn.execute("PRAGMA max_page_count = 1073741823")
    assert (
        client.post("/v1/profiles/batch", headers=AUTH, json={"profiles": big}).status_code == 202
    )


def test_metrics_show_the_queue_depth_by_lane(client: TestClient) -> None:
    body = {"profiles": [{"external_id": "a"}, {"external_id": "b"}], "targets": ["omneo"]}
    client.post("/v1/profiles/batch", headers=AUTH, json={**body, "priority": "bulk"})
    client.post("/v1/profiles", headers=AUTH, json={"external_id": "c", "targets": ["omneo"]})
    text = client.get("/metrics").text
    assert 'gateway_queue_depth{backend="omneo"} 3.0' in text
    assert 'gateway_queue_depth_by_lane{backend="omneo",lane="bulk"} 2.0' in text
    assert 'gateway_queue_depth_by_lane{backend="omneo",lane="realtime"} 1.0' in text
    assert 'gateway_queue_depth_by_lane{backend="ocamba",lane="bulk"} 0.0' in text


def test_metrics_can_require_a_token(settings: Settings) -> None:
    settings.metrics_token = "scrape-secret"
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=AUTH).status_code == 401  # an app token is not it
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert ok.status_code == 200 and "gateway_http_requests_total" in ok.text
        assert client.get("/livez").status_code == 200  # probes stay open
