"""DELETE /v1/profiles/{external_id}: an erasure request, end to end over the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.crypto import generate_key
from tests.conftest import AUTH

EMAIL = "erase.me@example.org"
PROFILE = {
    "external_id": "cust-9",
    "email": EMAIL,
    "phone": "+61 412 345 678",
    "first_name": "Erasmus",
    "addresses": [{"address_line_1": "12 Forgetful Lane", "city": "Hobart"}],
}


@pytest.fixture(params=["plaintext", "encrypted"])
def client(request: pytest.FixtureRequest, settings: Settings) -> Iterator[TestClient]:
    keys = generate_key("k1") if request.param == "encrypted" else ""
    configured = msgspec.structs.replace(settings, encryption_keys=keys)
    with TestClient(create_app(configured)) as c:
        yield c


def file_bytes(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))


def test_delete_erases_the_profile_and_says_so(
    client: TestClient, rows: Callable[[str], list[tuple[Any, ...]]], db_path: Path
) -> None:
    assert client.post("/v1/profiles", json=PROFILE, headers=AUTH).status_code == 202
    assert client.post("/v1/profiles", json=PROFILE, headers=AUTH).status_code == 202
    other = {"external_id": "cust-10", "email": "keep.me@example.org"}
    assert client.post("/v1/profiles", json=other, headers=AUTH).status_code == 202

    answer = client.delete("/v1/profiles/cust-9", headers=AUTH)
    assert answer.status_code == 200
    body = answer.json()
    assert body["erased"] is True and body["external_id"] == "cust-9"
    assert body["writes_erased"] == 2
    assert body["deliveries_cancelled"] == 6  # 2 writes x 3 backends, none sent yet
    assert (body["deliveries_in_flight"], body["delivered_to"]) == (0, [])
    assert "erase it there" in body["note"]

    view = client.get("/v1/profiles/cust-9", headers=AUTH).json()
    assert view["payload"] == "erased" and view["profile"] is None
    assert {d["state"] for d in view["backends"].values()} == {"erased"}
    # Never sent: nothing of that person is left in a state a claim takes,
    # also once expand makes the deliveries the erasure came before.
    assert rows("SELECT COUNT(*) FROM deliveries WHERE external_id = 'cust-9'") == [(0,)]
    assert client.portal is not None
    assert client.portal.call(client.app.state.ctx.store.expand) == 9  # type: ignore[attr-defined,call-arg]
    assert rows("SELECT DISTINCT state FROM deliveries WHERE external_id = 'cust-9'") == [
        ("erased",)
    ]
    assert rows("SELECT length(body) FROM profile_writes WHERE external_id = 'cust-9'") == [
        (0,),
        (0,),
    ]
    assert client.get("/v1/profiles/cust-10", headers=AUTH).json()["profile"] is not None

    raw = file_bytes(db_path)
    for secret in (EMAIL, "Erasmus", "Forgetful", "412345678"):
        assert secret.encode() not in raw


def test_erasing_again_or_an_unknown_id(client: TestClient) -> None:
    assert client.post("/v1/profiles", json=PROFILE, headers=AUTH).status_code == 202
    assert client.delete("/v1/profiles/cust-9", headers=AUTH).status_code == 200
    again = client.delete("/v1/profiles/cust-9", headers=AUTH)
    assert again.status_code == 200 and again.json()["writes_erased"] == 0
    assert client.delete("/v1/profiles/nobody", headers=AUTH).status_code == 404
    assert client.delete("/v1/profiles/cust-9").status_code == 401


def test_a_write_after_the_erasure_is_stored_as_new(client: TestClient) -> None:
    assert client.post("/v1/profiles", json=PROFILE, headers=AUTH).status_code == 202
    assert client.delete("/v1/profiles/cust-9", headers=AUTH).status_code == 200
    assert client.post("/v1/profiles", json=PROFILE, headers=AUTH).status_code == 202
    view = client.get("/v1/profiles/cust-9", headers=AUTH).json()
    assert view["payload"] == "stored" and view["profile"]["email"] == EMAIL


def test_the_erasure_is_documented(client: TestClient) -> None:
    doc = client.get("/openapi.json", headers=AUTH).json()
    operation = doc["paths"]["/v1/profiles/{external_id}"]["delete"]
    assert operation["operationId"] == "eraseProfile"
    assert "ErasureAnswer" in doc["components"]["schemas"]
