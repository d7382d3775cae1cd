from __future__ import annotations

import logging
import re
import time
from typing import Any

import httpx
import msgspec
import pytest

from gateway.backends.base import Outcome
from gateway.backends.omneo import (
    BATCH_PATH,
    OmneoAdapter,
    import_job_id,
    profile_body,
)
from gateway.backends.omneo_keys import match_key_of_context
from gateway.backends.transport import sender as transport_sender
from gateway.config import Settings
from gateway.simulators.omneo import create_omneo_app, omneo_sim
from tests.backends.fakes import Backend, item, profile, sender

pytestmark = pytest.mark.anyio

QUEUED = {"data": {"message": "Batch queued for processing.", "batch_id": "b-1"}}


def settings(**changes: Any) -> Settings:
    return Settings(omneo_url="http://omneo.test", **changes)


def queued(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json=QUEUED)


def unstamped(outcomes: list[Outcome]) -> list[Outcome]:
    """The outcomes without the clock reading of their call, which varies from
    run to run (test_an_accepted_outcome_carries_the_time_its_call_was_made)."""
    return [msgspec.structs.replace(o, sent_at=None) for o in outcomes]


def adapter(backend: Backend, **changes: Any) -> OmneoAdapter:
    return OmneoAdapter(settings(**changes), sender("omneo", backend.client()))


FULL: dict[str, Any] = {
    "external_id": "crm-42",
    "email": "jane@example.com",
    "phone": "+61412345678",
    "phone_country": "AU",
    "first_name": "Jane",
    "last_name": "Doe",
    "full_name": "Jane Doe",
    "gender": "female",
    "birth_date": "1990-02-28",
    "country_code": "AU",
    "language": "en-AU",
    "company": "ACME",
    "title": "Dr",
    "occupation": "Surgeon",
    "tags": ["vip", "newsletter"],
    "identities": {"shopify_id": "01F3P90M", "pos_id": "77"},
    "attributes": {"plan": "gold", "score": 7, "ratio": 0.5, "vip": True, "since": "2024-02-29"},
    "consents": {"email": True, "sms": False},
    "addresses": [
        {
            "address_line_1": "1 Main St",
            "address_line_2": "Level 2",
            "city": "Sydney",
            "postcode": "2000",
            "state": "NSW",
            "country": "AU",
            "company": "ACME",
            "is_default": True,
        },
        {"city": "Perth"},
    ],
}


async def test_batch_body_maps_every_field_as_omneo_documents_it() -> None:
    backend = Backend(queued)
    full = dict(FULL)
    del full["external_id"]
    outcomes = await adapter(backend).deliver([item(42, **full)])

    (body,) = backend.bodies(BATCH_PATH)
    assert body == {
        "match_criteria": "email",
        "import_job_id": import_job_id([item(42, **full)]),
        "profiles": [
            {
                "first_name": "Jane",
                "last_name": "Doe",
                "email": "jane@example.com",
                "title": "Dr",
                "company": "ACME",
                "occupation": "Surgeon",
                "gender": "female",
                "mobile_phone": "+61412345678",
                "birth_day": 28,
                "birth_month": 2,
                "birth_year": 1990,
                "tags": ["vip", "newsletter"],
                "identities": [
                    {"handle": "shopify_id", "identifier": "01F3P90M", "is_active": True},
                    {"handle": "pos_id", "identifier": "77", "is_active": True},
                ],
                "custom_attributes": [
                    {"namespace": "gateway", "handle": "plan", "type": "string", "value": "gold"},
                    {"namespace": "gateway", "handle": "score", "type": "string", "value": "7"},
                    {"namespace": "gateway", "handle": "ratio", "type": "string", "value": "0.5"},
                    {"namespace": "gateway", "handle": "vip", "type": "string", "value": "true"},
                    {
                        "namespace": "gateway",
                        "handle": "since",
                        "type": "string",
                        "value": "2024-02-29",
                    },
                ],
                "addresses": [
                    {
                        "address_line_1": "1 Main St",
                        "address_line_2": "Level 2",
                        "city": "Sydney",
                        "postcode": "2000",
                        "state": "NSW",
                        "country": "AU",
                        "company": "ACME",
                        "is_default": True,
                        "iso": "AU",
                    },
                    {"city": "Perth"},
                ],
                "comms_attributes": {"email_promo": True, "sms_promo": False},
            }
        ],
    }
    assert backend.requests[0].method == "POST"
    assert unstamped(outcomes) == [Outcome(42, "accepted", match_key="jane@example.com")]


@pytest.mark.parametrize("gender", ["other", "unknown"])
def test_genders_omneo_does_not_document_are_dropped(gender: str) -> None:
    assert "gender" not in profile_body(profile(email="a@example.com", gender=gender))
    assert profile_body(profile(email="a@example.com", gender="male"))["gender"] == "male"


def test_absent_fields_are_not_sent() -> None:
    assert profile_body(profile(email="a@example.com")) == {"email": "a@example.com"}
    assert profile_body(profile(email="a@example.com", consents={})) == {"email": "a@example.com"}


async def test_outcomes_carry_the_key_the_confirming_webhook_will_have() -> None:
    backend = Backend(queued)
    outcomes = await adapter(backend, omneo_match_criteria="shopify_id").deliver(
        [item(1, email="a@example.com", identities={"shopify_id": "S1"})]
    )
    (sent,) = backend.bodies(BATCH_PATH)[0]["profiles"]
    # Omneo's webhook context carries the profile's identities as sent.
    assert outcomes[0].match_key is not None
    assert outcomes[0].match_key == match_key_of_context(sent, "shopify_id")


def test_import_job_id_is_deterministic_per_set_of_deliveries() -> None:
    a = import_job_id([item(3, email="x@e.com"), item(1, email="y@e.com")])
    b = import_job_id([item(1, email="changed@e.com"), item(3, email="y@e.com")])
    c = import_job_id([item(1, email="y@e.com"), item(4, email="x@e.com")])
    assert a == b
    assert a != c
    assert re.fullmatch(r"gw-[0-9a-f]{24}", a)


async def test_profile_without_the_match_key_fails_and_is_left_out() -> None:
    backend = Backend(queued)
    outcomes = await adapter(backend).deliver(
        [item(1, email="a@example.com"), item(2, phone="+61412345678")]
    )
    assert unstamped(outcomes) == [
        Outcome(1, "accepted", match_key="a@example.com"),
        Outcome(
            2,
            "failed",
            "Omneo matches profiles by email (match_criteria), and this profile has none",
        ),
    ]
    assert [p["email"] for p in backend.bodies(BATCH_PATH)[0]["profiles"]] == ["a@example.com"]


async def test_matching_by_identity() -> None:
    backend = Backend(queued)
    outcomes = await adapter(backend, omneo_match_criteria="shopify_id").deliver(
        [
            item(1, identities={"shopify_id": "S1"}),
            item(2, email="no-identity@example.com"),
        ]
    )
    (body,) = backend.bodies(BATCH_PATH)
    assert body["match_criteria"] == "shopify_id"
    assert body["profiles"] == [
        {"identities": [{"handle": "shopify_id", "identifier": "S1", "is_active": True}]}
    ]
    assert unstamped(outcomes)[0] == Outcome(1, "accepted", match_key="shopify_id:S1")
    assert outcomes[1].state == "failed"
    assert "'shopify_id' identity" in str(outcomes[1].error)


async def test_nothing_to_send_makes_no_call() -> None:
    backend = Backend(queued)
    outcomes = await adapter(backend).deliver([item(1, first_name="x")])
    assert backend.requests == []
    assert outcomes[0].state == "failed"


async def test_batches_hold_at_most_500() -> None:
    backend = Backend(queued)
    omneo = adapter(backend, omneo_batch_size=900)
    assert omneo.batch_size == 500
    items = [item(i, email=f"p{i}@example.com") for i in range(1, 502)]

    outcomes = await omneo.deliver(items)

    assert [len(b["profiles"]) for b in backend.bodies(BATCH_PATH)] == [500, 1]
    assert len(outcomes) == 501
    assert {o.state for o in outcomes} == {"accepted"}


async def test_transient_failure_retries_the_batch_with_retry_after() -> None:
    backend = Backend(
        lambda r: httpx.Response(
            429, json={"message": "Too Many Attempts."}, headers={"Retry-After": "30"}
        )
    )
    outcomes = await adapter(backend).deliver([item(1, email="a@example.com"), item(2)])
    assert outcomes == [
        Outcome(
            1,
            "retry",
            "omneo batch: HTTP 429: Too Many Attempts.",
            retry_after=30.0,
            match_key="a@example.com",
        ),
        Outcome(
            2,
            "failed",
            "Omneo matches profiles by email (match_criteria), and this profile has none",
        ),
    ]


async def test_refused_batch_fails_with_omneos_message() -> None:
    backend = Backend(lambda r: httpx.Response(401, json={"message": "Unauthenticated."}))
    outcomes = await adapter(backend).deliver([item(1, email="a@example.com")])
    assert outcomes == [
        Outcome(1, "failed", "omneo batch: HTTP 401: Unauthenticated.", match_key="a@example.com")
    ]


# -- against the Omneo simulator -------------------------------------------


async def test_simulator_processes_the_batch_and_one_bad_profile_fails_alone() -> None:
    app = create_omneo_app(tokens={"tok": "gateway"}, processing_delay=0.0, seed=3)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    omneo = OmneoAdapter(
        settings(),
        sender(
            "omneo",
            client,
            base_url="http://omneo.test/api",
            headers={"Authorization": "Bearer tok"},
        ),
    )
    full = dict(FULL)
    del full["external_id"]
    items = [
        item(1, **full),
        item(2, email="b@example.com", first_name="Bob", attributes={"n": 2}),
        # Not an address Omneo's validator accepts: the whole batch gets a 422.
        item(3, email="not-an-email", first_name="Bad"),
        item(4, email="d@example.com", tags=["x"]),
    ]

    outcomes = {o.delivery_id: o for o in unstamped(await omneo.deliver(items))}
    sim = omneo_sim(app)
    await sim.idle()

    assert outcomes[1] == Outcome(1, "accepted", match_key="jane@example.com")
    assert outcomes[2] == Outcome(2, "accepted", match_key="b@example.com")
    assert outcomes[4] == Outcome(4, "accepted", match_key="d@example.com")
    assert outcomes[3].state == "failed"
    assert outcomes[3].error == (
        "omneo batch: HTTP 422: The given data was invalid."
        " (The profiles.0.email field must be a valid email address.)"
    )
    # The 4-profile batch is refused; its halves [1, 2] and [3, 4] are tried,
    # then [3] and [4]: five calls, two of them queued.
    assert sim.received.statuses() == [422, 202, 422, 422, 202]
    assert [b.size for b in sim.batches] == [2, 1]
    assert sim.errors == []
    stored = {p.fields["email"]: p.fields for p in sim.profiles.values()}
    assert set(stored) == {"jane@example.com", "b@example.com", "d@example.com"}
    jane = stored["jane@example.com"]
    assert jane["birth_year"] == 1990
    assert jane["comms_attributes"] == {"email_promo": True, "sms_promo": False}
    assert {i["handle"] for i in jane["identities"]} == {"shopify_id", "pos_id"}
    assert stored["b@example.com"]["custom_attributes"] == [
        {"namespace": "gateway", "handle": "n", "type": "string", "value": "2"}
    ]
    await sim.aclose()


async def test_a_base_url_without_api_is_refused_by_the_simulator_and_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_sender, "_NOT_FOUND_LOGGED", set())
    caplog.set_level(logging.INFO, logger="gateway.backends.http")
    app = create_omneo_app(tokens={"tok": "gateway"}, processing_delay=0.0)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    auth = {"Authorization": "Bearer tok"}
    # The host alone, as README examples used to show: Omneo's API is under /api.
    omneo = OmneoAdapter(
        settings(), sender("omneo", client, base_url="http://omneo.test", headers=auth)
    )

    first = await omneo.deliver([item(1, email="a@example.com")])
    second = await omneo.deliver([item(2, email="b@example.com")])

    for outcome in (*first, *second):
        assert outcome.state == "failed"
        assert outcome.error is not None and "HTTP 404" in outcome.error
    [line] = [r for r in caplog.records if r.name == "gateway.backends.http"]
    assert line.__dict__["url_path"] == "/v3/profiles/batch"
    assert "base URL is probably wrong" in line.getMessage()
    assert omneo_sim(app).batches == []
    await omneo_sim(app).aclose()


async def test_an_accepted_outcome_carries_the_time_its_call_was_made() -> None:
    posted: list[float] = []

    def stamp(request: httpx.Request) -> httpx.Response:
        posted.append(time.time())
        return queued(request)

    before = time.time()
    [outcome] = await adapter(Backend(stamp)).deliver([item(1, email="a@example.com")])
    assert outcome.state == "accepted"
    assert outcome.sent_at is not None and before <= outcome.sent_at <= posted[0]
