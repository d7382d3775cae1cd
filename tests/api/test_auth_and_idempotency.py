from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import AUTH, SHOP_TOKEN, count

Rows = Callable[[str], list[tuple[Any, ...]]]
PROFILE = {"external_id": "idem", "email": "idem@example.com"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic crm-token"},
        {"Authorization": "Bearer"},
        {"Authorization": "crm-token"},
    ],
)
def test_missing_or_wrong_token_is_401(client: TestClient, rows: Rows, headers: Any) -> None:
    r = client.post("/v1/profiles", headers=headers, json=PROFILE)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/profiles/idem", headers=headers).status_code == 401
    assert client.get("/v1/requests/abc", headers=headers).status_code == 401
    assert count(rows, "requests") == 0


def test_app_name_is_recorded(client: TestClient, rows: Rows) -> None:
    client.post("/v1/profiles", headers={"Authorization": f"Bearer {SHOP_TOKEN}"}, json=PROFILE)
    assert rows("SELECT app FROM requests") == [("shop",)]


def test_same_key_same_body_gives_the_same_answer_and_stores_nothing_new(
    client: TestClient, rows: Rows
) -> None:
    headers = {**AUTH, "Idempotency-Key": "k-1"}
    first = client.post("/v1/profiles", headers=headers, json=PROFILE)
    second = client.post("/v1/profiles", headers=headers, json=PROFILE)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert count(rows, "requests") == 1
    assert count(rows, "profile_writes") == 1
    assert count(rows, "expand_queue") == 1  # its deliveries, made later, are made once


def test_same_key_other_body_is_409(client: TestClient, rows: Rows) -> None:
    headers = {**AUTH, "Idempotency-Key": "k-2"}
    first = client.post("/v1/profiles", headers=headers, json=PROFILE)
    other = client.post("/v1/profiles", headers=headers, json={**PROFILE, "first_name": "Changed"})
    assert other.status_code == 409
    assert first.json()["request_id"] in other.json()["message"]
    assert count(rows, "requests") == 1


def test_keys_are_scoped_per_app(client: TestClient, rows: Rows) -> None:
    client.post("/v1/profiles", headers={**AUTH, "Idempotency-Key": "same"}, json=PROFILE)
    other_app = {"Authorization": f"Bearer {SHOP_TOKEN}", "Idempotency-Key": "same"}
    r = client.post("/v1/profiles", headers=other_app, json={**PROFILE, "first_name": "B"})
    assert r.status_code == 202
    assert count(rows, "requests") == 2


def test_invalid_body_with_a_key_does_not_burn_the_key(client: TestClient, rows: Rows) -> None:
    headers = {**AUTH, "Idempotency-Key": "k-3"}
    assert client.post("/v1/profiles", headers=headers, json={"email": "x"}).status_code == 422
    assert client.post("/v1/profiles", headers=headers, json=PROFILE).status_code == 202
    assert count(rows, "idempotency_keys") == 1


def test_overlong_key_is_400(client: TestClient, rows: Rows) -> None:
    r = client.post("/v1/profiles", headers={**AUTH, "Idempotency-Key": "k" * 256}, json=PROFILE)
    assert r.status_code == 400
    assert count(rows, "requests") == 0
