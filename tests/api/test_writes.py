"""Accepted writes: 202 only after commit, and the rows are really there."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import AUTH, count

Rows = Callable[[str], list[tuple[Any, ...]]]


def test_single_write_is_stored_with_a_pending_delivery_per_backend(
    client: TestClient, rows: Rows
) -> None:
    r = client.post(
        "/v1/profiles",
        headers=AUTH,
        json={"external_id": "u1", "email": " Jane@Example.COM ", "phone": "+49 30 1234567"},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["profiles"] == 1
    assert body["targets"] == ["ocamba", "omneo", "import_batch"]

    [(request_id, app, count_)] = rows("SELECT id, app, profile_count FROM requests")
    assert (request_id, app, count_) == (body["request_id"], "crm", 1)
    [(external_id, stored)] = rows("SELECT external_id, body FROM profile_writes")
    profile = json.loads(stored)
    assert external_id == "u1"
    assert profile["email"] == "jane@example.com"
    assert profile["phone"] == "+49301234567"
    assert profile["phone_country"] == "DE"
    # Durable now; its deliveries are made off the request path, at the first
    # claim (gateway/store/expand.py), and until then the status shows them pending.
    assert rows("SELECT request_id FROM expand_queue") == [(request_id,)]
    assert count(rows, "deliveries") == 0
    status = client.get(f"/v1/requests/{request_id}", headers=AUTH).json()
    [write] = status["profiles"]
    assert sorted((d["backend"], d["state"], d["attempts"]) for d in write["deliveries"]) == [
        ("import_batch", "pending", 0),
        ("ocamba", "pending", 0),
        ("omneo", "pending", 0),
    ]


def test_batch_write_with_targets(client: TestClient, rows: Rows) -> None:
    profiles = [{"external_id": f"p{i}", "email": f"p{i}@example.com"} for i in range(5)]
    r = client.post(
        "/v1/profiles/batch", headers=AUTH, json={"profiles": profiles, "targets": ["omneo"]}
    )
    assert r.status_code == 202, r.text
    assert r.json()["profiles"] == 5
    assert r.json()["targets"] == ["omneo"]
    assert count(rows, "profile_writes") == 5
    status = client.get(f"/v1/requests/{r.json()['request_id']}", headers=AUTH).json()
    assert {(d["backend"], d["state"]) for p in status["profiles"] for d in p["deliveries"]} == {
        ("omneo", "pending")
    }
    positions = rows("SELECT external_id, position FROM profile_writes ORDER BY position")
    assert positions == [(f"p{i}", i) for i in range(5)]


def test_national_phone_uses_country_code(client: TestClient, rows: Rows) -> None:
    r = client.post(
        "/v1/profiles",
        headers=AUTH,
        json={"external_id": "au", "phone": "0412 345 678", "country_code": "AU"},
    )
    assert r.status_code == 202, r.text
    profile = json.loads(rows("SELECT body FROM profile_writes")[0][0])
    assert profile["phone"] == "+61412345678"
    assert profile["phone_country"] == "AU"


def test_every_profile_field_round_trips(client: TestClient) -> None:
    full = {
        "external_id": "full-1",
        "email": "full@example.com",
        "phone": "+61412345678",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "full_name": "Ada Lovelace",
        "gender": "female",
        "birth_date": "1815-12-10",
        "country_code": "GB",
        "language": "en-GB",
        "company": "Analytical",
        "title": "Ms",
        "occupation": "Mathematician",
        "tags": ["vip", "early"],
        "identities": {"shopify_id": "S-1"},
        "attributes": {"tier": "gold", "points": 12.5, "active": True, "since": "2020-01-01"},
        "consents": {"email": True, "sms": False},
        "addresses": [{"address_line_1": "1 Main St", "city": "London", "country": "GB"}],
    }
    assert client.post("/v1/profiles", headers=AUTH, json=full).status_code == 202
    stored = client.get("/v1/profiles/full-1", headers=AUTH).json()["profile"]
    assert stored == {**full, "phone_country": "AU"}


def test_write_survives_a_restart(settings: Settings) -> None:
    with TestClient(create_app(settings)) as first:
        r = first.post(
            "/v1/profiles", headers=AUTH, json={"external_id": "keep", "email": "k@e.io"}
        )
        assert r.status_code == 202
        request_id = r.json()["request_id"]
    # A new app object on the same file: nothing held in memory carries over.
    with TestClient(create_app(settings)) as second:
        view = second.get(f"/v1/requests/{request_id}", headers=AUTH)
        assert view.status_code == 200
        assert [p["external_id"] for p in view.json()["profiles"]] == ["keep"]
        assert second.get("/v1/profiles/keep", headers=AUTH).json()["profile"]["email"] == "k@e.io"
