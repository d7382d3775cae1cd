"""The dead-letters API's answers to bad input (replays themselves: tests/e2e)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.conftest import AUTH


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"backend": "mailchimp"}, "backend"),
        ({"state": "pending"}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
    ],
)
def test_listing_rejects_bad_filters(client: TestClient, params: dict[str, str], path: str) -> None:
    r = client.get("/v1/dead-letters", params=params, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["errors"][0]["path"] == path


def test_listing_is_empty_at_first_and_needs_a_token(client: TestClient) -> None:
    assert client.get("/v1/dead-letters", headers=AUTH).json() == {"dead_letters": []}
    assert client.get("/v1/dead-letters").status_code == 401
    assert client.post("/v1/dead-letters/replay", json={"backend": "omneo"}).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"delivery_id": 1, "backend": "omneo"},
        {"backend": "mailchimp"},
        {"backend": "omneo", "state": "confirmed"},
        {"delivery_id": "one"},
        {"backend": "omneo", "extra": True},
    ],
)
def test_replay_rejects_bad_bodies(client: TestClient, body: dict[str, object]) -> None:
    assert client.post("/v1/dead-letters/replay", json=body, headers=AUTH).status_code == 422


def test_replay_of_nothing_is_an_empty_answer(client: TestClient) -> None:
    r = client.post("/v1/dead-letters/replay", json={"delivery_id": 12345}, headers=AUTH)
    assert r.json() == {"requeued": [], "superseded": []}
    bad = client.post("/v1/dead-letters/replay", content=b"{", headers=AUTH)
    assert bad.status_code == 400
