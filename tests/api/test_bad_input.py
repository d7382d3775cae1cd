"""Every bad input gets its status, names each offending field, and stores nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import AUTH, count

Rows = Callable[[str], list[tuple[Any, ...]]]


def assert_nothing_stored(rows: Rows) -> None:
    for table in ("requests", "profile_writes", "deliveries", "idempotency_keys"):
        assert count(rows, table) == 0, table


def paths(response: Any) -> list[str]:
    return [e["path"] for e in response.json()["errors"]]


def test_unparseable_json_is_400(client: TestClient, rows: Rows) -> None:
    r = client.post("/v1/profiles", headers=AUTH, content=b'{"external_id": ')
    assert r.status_code == 400
    assert r.json()["error"] == "bad_json"
    assert_nothing_stored(rows)


def test_batch_lists_every_error_with_its_path(client: TestClient, rows: Rows) -> None:
    profiles: list[Any] = [
        {"external_id": "ok-0", "email": "ok@example.com"},
        {"email": "no-id@example.com"},
        {"external_id": "x", "tags": ["a", 7], "birth_date": "1990-13-01"},
        {"external_id": "y", "email": "not-an-email"},
        {"external_id": "z", "phone": "12", "colour": "blue"},
        "not an object",
        {"external_id": "w", "attributes": {"good": 1, "bad": {"nested": True}}},
        {"external_id": "v", "country_code": "de", "consents": {"email": "yes"}},
    ]
    r = client.post("/v1/profiles/batch", headers=AUTH, json={"profiles": profiles})
    assert r.status_code == 422
    assert paths(r) == [
        "profiles[1].external_id",
        "profiles[2].tags[1]",
        "profiles[2].birth_date",
        "profiles[3].email",
        "profiles[4].colour",
        "profiles[5]",
        "profiles[6].attributes.bad",
        "profiles[7].country_code",
        "profiles[7].consents.email",
    ]
    assert_nothing_stored(rows)


def test_invalid_phone_is_named(client: TestClient, rows: Rows) -> None:
    r = client.post("/v1/profiles", headers=AUTH, json={"external_id": "p", "phone": "+4912"})
    assert r.status_code == 422
    assert paths(r) == ["phone"]
    r = client.post("/v1/profiles", headers=AUTH, json={"external_id": "p", "phone": "030 123456"})
    assert r.status_code == 422
    assert "country_code" in r.json()["errors"][0]["message"]
    assert_nothing_stored(rows)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"profiles": []}, ["profiles"]),
        ({"profiles": [{"external_id": str(i)} for i in range(1001)]}, ["profiles"]),
        ({}, ["profiles"]),
        ({"profiles": [{"external_id": "a"}], "extra": 1}, ["extra"]),
        ({"profiles": [{"external_id": "a"}, {"external_id": "a"}]}, ["profiles[1].external_id"]),
        ([{"external_id": "a"}], ["$"]),
    ],
)
def test_batch_envelope_errors(
    client: TestClient, rows: Rows, body: Any, expected: list[str]
) -> None:
    r = client.post("/v1/profiles/batch", headers=AUTH, json=body)
    assert r.status_code == 422
    assert paths(r) == expected
    assert_nothing_stored(rows)


def test_unknown_and_unconfigured_targets_are_422(settings: Settings, rows: Rows) -> None:
    settings.ocamba_url = ""
    with TestClient(create_app(settings)) as client:
        r = client.post(
            "/v1/profiles/batch",
            headers=AUTH,
            json={"profiles": [{"external_id": "a"}], "targets": ["omneo", "mailchimp", "ocamba"]},
        )
        assert r.status_code == 422
        errors = r.json()["errors"]
        assert [e["path"] for e in errors] == ["targets[1]", "targets[2]"]
        assert "unknown target" in errors[0]["message"]
        assert "not configured" in errors[1]["message"]
        single = client.post(
            "/v1/profiles", headers=AUTH, json={"external_id": "a", "targets": ["nope"]}
        )
        assert single.status_code == 422
        assert paths(single) == ["targets[0]"]
    assert_nothing_stored(rows)


def test_body_over_the_limit_is_413(settings: Settings, rows: Rows) -> None:
    settings.max_body_bytes = 1024
    with TestClient(create_app(settings)) as client:
        big = {"profiles": [{"external_id": f"id-{i}", "first_name": "x" * 50} for i in range(40)]}
        r = client.post("/v1/profiles/batch", headers=AUTH, json=big)
        assert r.status_code == 413
        assert r.json()["error"] == "too_large"

        # A streamed body without Content-Length is cut off too.
        def chunks() -> Any:
            for _ in range(20):
                yield b" " * 100

        r = client.post("/v1/profiles", headers=AUTH, content=chunks())
        assert r.status_code == 413
    assert_nothing_stored(rows)


def test_ocamba_property_limit_applies_only_when_ocamba_is_a_target(
    client: TestClient, rows: Rows
) -> None:
    many = {f"p{i}": i for i in range(101)}
    r = client.post("/v1/profiles", headers=AUTH, json={"external_id": "m", "attributes": many})
    assert r.status_code == 422
    assert paths(r) == ["attributes"]
    assert_nothing_stored(rows)
    r = client.post(
        "/v1/profiles",
        headers=AUTH,
        json={"external_id": "m", "attributes": many, "targets": ["omneo"]},
    )
    assert r.status_code == 202
