from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from gateway.simulators.omneo import OmneoSim, create_omneo_app, omneo_sim
from tests.simulators.helpers import Receiver, asgi_client

pytestmark = pytest.mark.anyio

TOKEN = "omneo-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "s3cret"
BATCH = "/api/v3/profiles/batch"
CREATED = "/v1/webhooks/omneo/profile.created"
UPDATED = "/v1/webhooks/omneo/profile.updated"


def hex_hmac(raw: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


@asynccontextmanager
async def omneo(
    receiver: Receiver | None, **kwargs: Any
) -> AsyncIterator[tuple[OmneoSim, httpx.AsyncClient]]:
    """The simulator in-process (lifespan run), its webhooks to the real receiver."""
    options: dict[str, Any] = {
        "webhook_created_url": receiver.url + CREATED if receiver else None,
        "webhook_updated_url": receiver.url + UPDATED if receiver else None,
        "webhook_secret": SECRET,
        "processing_delay": 0.01,
        "seed": 3,
        **kwargs,
    }
    app = create_omneo_app(**options)
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        yield omneo_sim(app), client


async def batch(
    client: httpx.AsyncClient, profiles: list[dict[str, Any]], criteria: str = "email"
) -> httpx.Response:
    return await client.post(
        BATCH, json={"match_criteria": criteria, "profiles": profiles}, headers=AUTH
    )


async def test_batch_is_queued_then_created_profiles_are_posted_signed(
    receiver: Receiver,
) -> None:
    async with omneo(receiver) as (sim, client):
        r = await batch(
            client,
            [
                {"email": "ann@x.io", "first_name": "Ann", "tags": ["vip"]},
                {"email": "bob@x.io", "first_name": "Bob", "last_name": "Stone"},
            ],
        )
        assert r.status_code == 202
        body = r.json()
        assert list(body) == ["data"] and list(body["data"]) == ["message", "batch_id"]
        assert body["data"]["message"] == "Batch queued for processing."
        uuid.UUID(body["data"]["batch_id"])
        assert sim.store.profiles == {}  # nothing happens before the processing delay
        await sim.idle()

    assert receiver.paths() == [CREATED, CREATED]
    first = receiver.hits[0]
    context = first.json()
    assert isinstance(context, dict)
    # The profile itself at the root: no envelope, no event type.
    assert "data" not in context and "event" not in context
    for key in ("id", "email", "first_name", "last_name", "identities", "custom_attributes"):
        assert key in context
    assert list(context)[-2:] == ["created_at", "updated_at"]
    assert context["id"] == 1000 and context["email"] == "ann@x.io"
    assert context["tags"] == ["vip"]
    second = receiver.hits[1].json()
    assert (second["id"], second["full_name"]) == (1001, "Bob Stone")
    for hit in receiver.hits:
        assert hit.headers["x-omneo-hmac-sha256"] == hex_hmac(hit.raw)
        assert hit.headers["content-type"] == "application/json"
    assert [a.status for a in sim.webhooks] == [200, 200]
    assert sim.webhooks[0].raw.encode() == first.raw


async def test_a_matching_email_updates_and_posts_profile_updated(receiver: Receiver) -> None:
    async with omneo(receiver) as (sim, client):
        await batch(client, [{"email": "Ann@x.io", "first_name": "Ann", "tags": ["a"]}])
        await sim.idle()
        await batch(client, [{"email": "ann@X.io", "last_name": "Lee", "tags": ["b", "a"]}])
        await sim.idle()

    assert receiver.paths() == [CREATED, UPDATED]
    updated = receiver.hits[1].json()
    assert isinstance(updated, dict)
    assert updated["id"] == 1000
    assert (updated["first_name"], updated["last_name"]) == ("Ann", "Lee")
    assert updated["tags"] == ["a", "b"]
    assert (sim.created, sim.updated) == (1, 1)


async def test_identity_matching_and_a_profile_without_the_identity(receiver: Receiver) -> None:
    shopify = {"handle": "shopify_id", "identifier": "01F3P90M3PCTE22QYJ5NZWVZQ3"}
    async with omneo(receiver) as (sim, client):
        await batch(
            client,
            [
                {"email": "j@x.io", "identities": [shopify]},
                {"email": "nobody@x.io", "identities": [{"handle": "pos", "identifier": "9"}]},
            ],
            criteria="shopify_id",
        )
        await sim.idle()
        await batch(
            client, [{"first_name": "Johnny", "identities": [shopify]}], criteria="shopify_id"
        )
        await sim.idle()

    assert receiver.paths() == [CREATED, UPDATED]
    updated = receiver.hits[1].json()
    assert isinstance(updated, dict)
    assert updated["email"] == "j@x.io" and updated["first_name"] == "Johnny"
    assert updated["identities"] == [{**shopify, "is_active": True}]
    assert [(e.index, "shopify_id" in e.reason) for e in sim.errors] == [(1, True)]
    assert len(sim.store.profiles) == 1


async def test_an_email_taken_by_another_profile_is_a_processing_error(
    receiver: Receiver,
) -> None:
    async with omneo(receiver) as (sim, client):
        await batch(client, [{"email": "taken@x.io"}])
        await sim.idle()
        await batch(
            client,
            [{"email": "taken@x.io", "identities": [{"handle": "crm", "identifier": "7"}]}],
            criteria="crm",
        )
        await sim.idle()
    assert receiver.paths() == [CREATED]
    assert "taken" in sim.errors[0].reason


async def test_base64_signature_in_a_custom_header(receiver: Receiver) -> None:
    async with omneo(receiver, signature_header="X-Sig", signature_encoding="base64") as (
        sim,
        client,
    ):
        await batch(client, [{"email": "b64@x.io"}])
        await sim.idle()
    hit = receiver.hits[0]
    digest = hmac.new(SECRET.encode(), hit.raw, hashlib.sha256).digest()
    assert hit.headers["x-sig"] == base64.b64encode(digest).decode()
    assert "x-omneo-hmac-sha256" not in hit.headers


async def test_no_echo_to_the_namespace_that_wrote(receiver: Receiver) -> None:
    tokens = {TOKEN: "gateway-webhooks", "other-token": "gateway"}
    async with omneo(receiver, tokens=tokens) as (sim, client):
        await batch(client, [{"email": "echo@x.io"}])
        await sim.idle()
        assert receiver.hits == []
        assert [(s.reason, s.event) for s in sim.suppressed] == [("echo", "profile.created")]
        assert len(sim.store.profiles) == 1  # written, only not echoed

        # Another token's writes are sent...
        await client.post(
            BATCH,
            json={"match_criteria": "email", "profiles": [{"email": "echo@x.io"}]},
            headers={"Authorization": "Bearer other-token"},
        )
        await sim.idle()
        assert receiver.paths() == [UPDATED]

        # ...and moving the webhook namespace at runtime releases the first token's.
        put = await client.put("/_sim/webhooks", json={"namespace": "elsewhere"})
        assert put.status_code == 200 and put.json()["namespace"] == "elsewhere"
        await batch(client, [{"email": "echo@x.io"}])
        await sim.idle()
    assert receiver.paths() == [UPDATED, UPDATED]


async def test_drop_switch_sends_nothing(receiver: Receiver) -> None:
    async with omneo(receiver) as (sim, client):
        sim.update_settings({"drop_rate": 1.0})
        await batch(client, [{"email": "d1@x.io"}, {"email": "d2@x.io"}])
        await sim.idle()
    assert receiver.hits == []
    assert [s.reason for s in sim.dropped] == ["dropped", "dropped"]
    assert sim.stats()["webhooks_dropped"] == 2


async def test_duplicate_switch_sends_each_event_twice(receiver: Receiver) -> None:
    async with omneo(receiver) as (sim, client):
        sim.update_settings({"duplicate_rate": 1.0})
        await batch(client, [{"email": "dup@x.io"}])
        await sim.idle()
    assert receiver.paths() == [CREATED, CREATED]
    assert receiver.hits[0].raw == receiver.hits[1].raw
    assert {a.delivery for a in sim.webhooks} == {1, 2}


async def test_delay_switch_holds_webhooks_back(receiver: Receiver) -> None:
    async with omneo(receiver) as (sim, client):
        sim.update_settings({"delay": 0.3})
        started = time.monotonic()
        await batch(client, [{"email": "late@x.io"}])
        await sim.idle()
    assert receiver.paths() == [CREATED]
    assert sim.webhooks[0].at - started >= 0.3


async def test_a_failed_webhook_is_retried(receiver: Receiver) -> None:
    receiver.fail_with = [500, 503]
    async with omneo(receiver) as (sim, client):
        sim.update_settings({"retry_backoff": 0.01})
        await batch(client, [{"email": "retry@x.io"}])
        await sim.idle()
    assert [(a.attempt, a.status) for a in sim.webhooks] == [(1, 500), (2, 503), (3, 200)]
    assert len(receiver.hits) == 3
    assert (sim.sender.delivered, sim.sender.failed) == (1, 0)


async def test_an_unreachable_receiver_gets_four_attempts(receiver: Receiver) -> None:
    async with omneo(receiver, webhook_created_url="http://127.0.0.1:9/hook") as (sim, client):
        sim.update_settings({"retry_backoff": 0.01})
        await batch(client, [{"email": "void@x.io"}])
        await sim.idle()
    assert [a.status for a in sim.webhooks] == [None] * 4
    assert all(a.error for a in sim.webhooks)
    assert sim.sender.failed == 1


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}]
)
async def test_missing_or_wrong_token_is_401(headers: dict[str, str]) -> None:
    async with omneo(None) as (sim, client):
        r = await client.post(
            BATCH, json={"match_criteria": "email", "profiles": [{}]}, headers=headers
        )
    assert r.status_code == 401 and r.json() == {"message": "Unauthenticated."}
    assert sim.batches == [] and sim.received.statuses() == [401]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {"profiles": [{"email": "a@x.io"}]},
            {"match_criteria": ["The match criteria field is required."]},
        ),
        (
            {"match_criteria": "email", "profiles": []},
            {"profiles": ["The profiles field is required."]},
        ),
        (
            {"match_criteria": "email", "profiles": [{}] * 501},
            {"profiles": ["The profiles field must not have more than 500 items."]},
        ),
        (
            {"match_criteria": 5, "profiles": "x", "import_job_id": 9},
            {
                "match_criteria": ["The match criteria field must be a string."],
                "import_job_id": ["The import job id field must be a string."],
                "profiles": ["The profiles field must be an array."],
            },
        ),
        (
            {"match_criteria": "email", "profiles": [{}, {}, {}, {"email": 42}]},
            {"profiles.3.email": ["The profiles.3.email field must be a string."]},
        ),
        (
            {"match_criteria": "email", "profiles": [{"email": "nope"}]},
            {"profiles.0.email": ["The profiles.0.email field must be a valid email address."]},
        ),
        (
            {
                "match_criteria": "email",
                "profiles": [
                    {
                        "identities": [{"identifier": "1"}],
                        "custom_attributes": [{"namespace": "n", "handle": "h"}],
                        "birth_year": "1990",
                        "tags": [1],
                    }
                ],
            },
            {
                "profiles.0.birth_year": ["The profiles.0.birth year field must be an integer."],
                "profiles.0.tags.0": ["The profiles.0.tags.0 field must be a string."],
                "profiles.0.identities.0.handle": [
                    "The profiles.0.identities.0.handle field is required."
                ],
                "profiles.0.custom_attributes.0.value": [
                    "The profiles.0.custom attributes.0.value field is required."
                ],
            },
        ),
        (
            # Only the documented `string` type, with a string value; dates go in
            # dates_attributes as Y-m-d.
            {
                "match_criteria": "email",
                "profiles": [
                    {
                        "custom_attributes": [
                            {"namespace": "n", "handle": "a", "type": "string", "value": "7"},
                            {"namespace": "n", "handle": "b", "type": "number", "value": "7"},
                            {
                                "namespace": "n",
                                "handle": "c",
                                "type": "date",
                                "value": "2024-01-01",
                            },
                            {"namespace": "n", "handle": "d", "type": "boolean", "value": "true"},
                            {"namespace": "n", "handle": "e", "type": "string", "value": 7},
                        ],
                        "dates_attributes": [
                            {"date": "2023-12-25", "handle": "ok"},
                            {"date": "25/12/2023", "handle": "bad"},
                            {"date": "2023-02-30", "handle": "bad"},
                        ],
                    }
                ],
            },
            {
                "profiles.0.custom_attributes.1.type": [
                    "The selected profiles.0.custom attributes.1.type is invalid."
                ],
                "profiles.0.custom_attributes.2.type": [
                    "The selected profiles.0.custom attributes.2.type is invalid."
                ],
                "profiles.0.custom_attributes.3.type": [
                    "The selected profiles.0.custom attributes.3.type is invalid."
                ],
                "profiles.0.custom_attributes.4.value": [
                    "The profiles.0.custom attributes.4.value field must be a string."
                ],
                "profiles.0.dates_attributes.1.date": [
                    "The profiles.0.dates attributes.1.date field must match the format Y-m-d."
                ],
                "profiles.0.dates_attributes.2.date": [
                    "The profiles.0.dates attributes.2.date field must match the format Y-m-d."
                ],
            },
        ),
    ],
)
async def test_malformed_batches_get_laravel_422(
    body: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    async with omneo(None) as (sim, client):
        r = await client.post(BATCH, json=body, headers=AUTH)
    assert r.status_code == 422
    assert r.json() == {"message": "The given data was invalid.", "errors": errors}
    assert sim.batches == []


async def test_an_unparseable_body_is_read_as_empty_input() -> None:
    async with omneo(None) as (_, client):
        r = await client.post(BATCH, content=b"{oops", headers=AUTH)
    assert r.status_code == 422
    assert set(r.json()["errors"]) == {"match_criteria", "profiles"}


async def test_batch_json_alias_and_import_job_id(receiver: Receiver) -> None:
    async with omneo(receiver) as (sim, client):
        r = await client.post(
            "/api/v3/profiles/batch.json",
            json={
                "match_criteria": "email",
                "profiles": [{"email": "j@x.io"}],
                "import_job_id": "7",
            },
            headers=AUTH,
        )
        await sim.idle()
    assert r.status_code == 202
    assert sim.batches[0].import_job_id == "7" and sim.batches[0].processed
    assert receiver.paths() == [CREATED]


async def test_error_fault_answers_500_and_queues_nothing(receiver: Receiver) -> None:
    async with omneo(receiver) as (sim, client):
        sim.faults.error_rate = 1.0
        r = await batch(client, [{"email": "x@x.io"}])
        await sim.idle()
        sim.faults.throttle_rate, sim.faults.error_rate = 1.0, 0.0
        throttled = await batch(client, [{"email": "x@x.io"}])
    assert r.status_code == 500 and r.json() == {"message": "Server Error"}
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    assert sim.batches == [] and receiver.hits == []


async def test_webhook_control_endpoints(receiver: Receiver) -> None:
    async with omneo(receiver) as (sim, client):
        await batch(client, [{"email": "c@x.io"}, {"first_name": "no email"}])
        assert (await client.get("/_sim/idle")).json() == {"idle": True}
        sent = (await client.get("/_sim/webhooks")).json()
        assert [(w["event"], w["status"]) for w in sent] == [("profile.created", 200)]
        assert sent[0]["headers"]["X-Omneo-Hmac-SHA256"] == hex_hmac(sent[0]["raw"].encode())
        errors = (await client.get("/_sim/errors")).json()
        assert [e["index"] for e in errors] == [1]
        settings = (await client.get("/_sim/webhooks/settings")).json()
        assert settings["created_url"] == receiver.url + CREATED
        assert (await client.put("/_sim/webhooks", json={"drop_rate": 3})).status_code == 422
        assert (await client.put("/_sim/webhooks", json={"dorp_rate": 1})).status_code == 422
        assert sim.settings.drop_rate == 0.0
        assert (await client.delete("/_sim/webhooks")).status_code == 204
        assert (await client.get("/_sim/webhooks")).json() == []
        stats = (await client.get("/_sim/stats")).json()
        assert stats["created"] == 1 and stats["processing_errors"] == 1
        profiles = (await client.get("/_sim/profiles")).json()
        assert [p["email"] for p in profiles] == ["c@x.io"]
