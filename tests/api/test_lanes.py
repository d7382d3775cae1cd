"""Priority lanes and resend at the API (README, Priority lanes and resend):
what a write asks for, or its app's default lane, is stored with the request."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import AUTH, SHOP_TOKEN
from tests.store import pg

Rows = Callable[[str], list[tuple[Any, ...]]]
SHOP = {"Authorization": f"Bearer {SHOP_TOKEN}"}


def _stored(rows: Rows, request_id: str) -> tuple[str, bool]:
    [(lane, resend)] = rows(f"SELECT lane, resend FROM requests WHERE id = '{request_id}'")
    return lane, bool(resend)


def test_a_write_is_realtime_without_resend_unless_it_says_otherwise(
    client: TestClient, rows: Rows
) -> None:
    plain = client.post("/v1/profiles", headers=AUTH, json={"external_id": "p1"})
    assert plain.status_code == 202, plain.text
    assert plain.json()["lane"] == "realtime"
    assert _stored(rows, plain.json()["request_id"]) == ("realtime", False)

    asked = client.post(
        "/v1/profiles",
        headers=AUTH,
        json={"external_id": "p2", "priority": "bulk", "resend": True},
    )
    assert asked.status_code == 202, asked.text
    assert asked.json()["lane"] == "bulk"
    assert _stored(rows, asked.json()["request_id"]) == ("bulk", True)
    status = client.get(f"/v1/requests/{asked.json()['request_id']}", headers=AUTH).json()
    assert (status["lane"], status["resend"]) == ("bulk", True)

    batch = client.post(
        "/v1/profiles/batch",
        headers=AUTH,
        json={
            "profiles": [{"external_id": "b1"}, {"external_id": "b2"}],
            "priority": "bulk",
            "resend": True,
        },
    )
    assert batch.status_code == 202, batch.text
    assert batch.json()["lane"] == "bulk"
    assert _stored(rows, batch.json()["request_id"]) == ("bulk", True)

    realtime = client.post(
        "/v1/profiles/batch",
        headers=AUTH,
        json={"profiles": [{"external_id": "b3"}], "priority": "realtime", "resend": False},
    )
    assert _stored(rows, realtime.json()["request_id"]) == ("realtime", False)
    # The profile itself carries neither: they are the request's.
    bodies = rows("SELECT body FROM profile_writes")
    assert all(b"priority" not in bytes(body) for (body,) in bodies)


@pytest.mark.parametrize("route", ["/v1/profiles", "/v1/profiles/batch"])
def test_an_unknown_lane_or_a_resend_that_is_not_a_flag_is_refused(
    client: TestClient, rows: Rows, route: str
) -> None:
    profile = {"external_id": "p1"}
    body = {"profiles": [profile]} if route.endswith("batch") else dict(profile)
    r = client.post(route, headers=AUTH, json={**body, "priority": "urgent", "resend": "yes"})
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {"path": "priority", "message": "expected one of realtime, bulk or null"},
        {"path": "resend", "message": "expected true or false"},
    ]
    assert rows("SELECT COUNT(*) FROM requests") == [(0,)]


def test_an_apps_default_lane_applies_unless_the_write_names_one(
    settings: Settings, rows: Rows
) -> None:
    settings.app_lanes = "shop:bulk, crm:realtime"
    with TestClient(create_app(settings)) as client:
        shop = client.post("/v1/profiles", headers=SHOP, json={"external_id": "s1"})
        assert shop.json()["lane"] == "bulk"
        assert _stored(rows, shop.json()["request_id"]) == ("bulk", False)
        urgent = client.post(
            "/v1/profiles", headers=SHOP, json={"external_id": "s2", "priority": "realtime"}
        )
        assert _stored(rows, urgent.json()["request_id"]) == ("realtime", False)
        crm = client.post(
            "/v1/profiles/batch", headers=AUTH, json={"profiles": [{"external_id": "c1"}]}
        )
        assert _stored(rows, crm.json()["request_id"]) == ("realtime", False)


def test_the_idempotency_key_covers_priority_and_resend(client: TestClient, rows: Rows) -> None:
    key = {**AUTH, "Idempotency-Key": "lane-1"}
    first = client.post("/v1/profiles", headers=key, json={"external_id": "p1"})
    assert first.status_code == 202
    again = client.post("/v1/profiles", headers=key, json={"external_id": "p1"})
    assert again.headers["idempotent-replayed"] == "true"
    for other in ({"priority": "bulk"}, {"resend": True}):
        r = client.post("/v1/profiles", headers=key, json={"external_id": "p1", **other})
        assert r.status_code == 409, other
    assert rows("SELECT lane, resend FROM requests") == [("realtime", 0)]


def test_both_engines_store_what_the_api_was_told(store_url: str, settings: Settings) -> None:
    settings.database_url = store_url
    settings.app_lanes = "shop:bulk"
    writes: list[tuple[dict[str, str], dict[str, Any]]] = [
        (AUTH, {}),
        (AUTH, {"priority": "bulk", "resend": True}),
        (SHOP, {}),
        (SHOP, {"priority": "realtime"}),
    ]
    with TestClient(create_app(settings)) as client:
        ids = []
        for i, (headers, extra) in enumerate(writes):
            r = client.post("/v1/profiles", headers=headers, json={"external_id": f"e{i}", **extra})
            ids.append(r.json()["request_id"])
    sql = "SELECT id, lane, resend FROM requests"
    if store_url.startswith("sqlite:///"):
        conn = sqlite3.connect(store_url[len("sqlite:///") :])
        try:
            found = {r[0]: (r[1], bool(r[2])) for r in conn.execute(sql)}
        finally:
            conn.close()
    else:
        found = {r[0]: (r[1], bool(r[2])) for r in pg.run(pg.execute(store_url, sql))}
    assert [found[i] for i in ids] == [
        ("realtime", False),
        ("bulk", True),
        ("bulk", False),
        ("realtime", False),
    ]
