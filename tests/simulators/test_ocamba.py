from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import httpx
import pytest

from gateway.simulators.ocamba import MASK, create_ocamba_app, ocamba_sim
from gateway.simulators.serving import serve_app
from tests.simulators.helpers import FakeClock, asgi_client, eventually

pytestmark = pytest.mark.anyio

TOKEN = "ocamba-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CREATE = "/v1/hood/profiles"
IMPORT = "/v1/hood/profiles/import"

# Key for key, in order, the 201 body of seeds/001 (Create Profile).
DOC_CREATE_KEYS = [
    "id", "company_id", "status", "container_id", "app_type", "app_name", "country_code",
    "region", "city", "asn", "os_id", "browser_id", "device_id", "user_lang", "timezone",
    "total_pageviews", "total_goals", "push_wokenup", "push_clicks", "ad_served",
    "ad_impressions", "ad_spam_impressions", "ad_clicks", "ad_spam_clicks", "ad_conversions",
    "metadata", "mobile_phone_number", "email", "subscription", "engagement_score",
    "conversion_score", "first_session_date", "income", "cost", "full_name", "create_time",
    "update_time", "total_engagements",
]  # fmt: skip
DATETIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def props(count: int) -> dict[str, Any]:
    return {f"p{i}": {"type": "string", "value": str(i)} for i in range(count)}


def assert_error_body(response: httpx.Response, code: int, title: str) -> None:
    body = response.json()
    assert response.status_code == code
    assert list(body) == ["code", "title", "message", "trace_id"]
    assert body["code"] == code and body["title"] == title
    uuid.UUID(body["trace_id"])


async def create(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(CREATE, json=body, headers=AUTH)


async def test_create_answers_the_documented_body() -> None:
    app = create_ocamba_app(seed=1)
    async with asgi_client(app) as client:
        r = await create(
            client, full_name="Jane Doe", mobile_phone_number="+49234432234", email="jane@x.de"
        )
    assert r.status_code == 201
    body = r.json()
    assert list(body) == DOC_CREATE_KEYS
    assert re.fullmatch(r"\d{19,20}", body["id"])
    assert body["country_code"] == "DE"
    assert body["email"] == MASK and body["mobile_phone_number"] == MASK
    assert body["metadata"] == {"encrypted": ["email", "mobile_phone_number"]}
    assert body["subscription"]["sms"]["status"] == "active"
    assert body["full_name"] == "Jane Doe"
    assert DATETIME.match(body["create_time"]) and body["create_time"] == body["update_time"]
    assert r.headers["X-RateLimit-Limit"] == "150"
    assert r.headers["X-RateLimit-Remaining"] == "149"
    stored = ocamba_sim(app).profiles[body["id"]]
    assert stored.email == "jane@x.de" and stored.mobile_phone_number == "+49234432234"


async def test_create_with_email_only_has_no_country_and_no_phone() -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        r = await create(client, email="solo@x.io")
    body = r.json()
    assert r.status_code == 201
    assert body["country_code"] == "" and body["mobile_phone_number"] == ""
    assert body["email"] == MASK
    assert body["subscription"]["sms"]["status"] == "inactive"


async def test_create_never_deduplicates_and_counts_it() -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        first = await create(client, email="twice@x.io")
        second = await create(client, email="twice@x.io")
    assert first.json()["id"] != second.json()["id"]
    sim = ocamba_sim(app)
    assert len(sim.find_by_email("twice@x.io")) == 2
    assert sim.stats()["duplicate_creates"] == 1


@pytest.mark.parametrize(
    "content",
    [
        b'{"full_name": "No Contact"}',
        b'{"email": "", "mobile_phone_number": null}',
        b'{"email": 42}',
        b'{"email": "not-an-email"}',
        b"[1, 2]",
        b"{not json",
        b"",
    ],
)
async def test_create_refuses_bad_bodies_with_the_documented_400(content: bytes) -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        r = await client.post(CREATE, content=content, headers=AUTH)
    assert_error_body(r, 400, "Bad request.")
    assert "X-RateLimit-Remaining" in r.headers
    assert ocamba_sim(app).profiles == {}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
async def test_missing_or_wrong_token_is_401_and_not_counted(headers: dict[str, str]) -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        r = await client.post(CREATE, json={"email": "a@b.co"}, headers=headers)
    assert_error_body(r, 401, "Unauthorized.")
    assert "X-RateLimit-Limit" not in r.headers
    sim = ocamba_sim(app)
    assert sim.limiter.stats.admitted == 0
    assert sim.received.statuses() == [401]


async def test_import_applies_custom_properties_to_created_profiles() -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        a = (await create(client, email="a@x.io")).json()["id"]
        b = (await create(client, email="b@x.io")).json()["id"]
        r = await client.post(
            IMPORT,
            json={
                "profiles": [
                    {"id": a, "custom_properties": {"tier": {"type": "string", "value": "gold"}}},
                    {"id": b, "custom_properties": {"tier": {"type": "string", "value": "blue"}}},
                ]
            },
            headers=AUTH,
        )
        digits = {"n": {"type": "string", "value": "1234567890"}}
        again = await client.post(
            IMPORT, json={"profiles": [{"id": a, "custom_properties": digits}]}, headers=AUTH
        )
    assert r.status_code == 202 and again.status_code == 202
    body = r.json()
    assert list(body) == ["message", "publish_time", "request_id", "status"]
    assert body["message"] == "Profiles have been queued for processing."
    assert body["status"] == "accepted"
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    assert DATETIME.match(body["publish_time"])
    sim = ocamba_sim(app)
    assert sim.profiles[a].custom_properties == {
        "tier": {"type": "string", "value": "gold"},
        "n": {"type": "string", "value": "1234567890"},
    }
    assert sim.profiles[b].custom_properties == {"tier": {"type": "string", "value": "blue"}}
    assert [imp.ids for imp in sim.imports] == [[a, b], [a]]


async def test_import_refuses_an_unknown_id_and_applies_nothing() -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        known = (await create(client, email="k@x.io")).json()["id"]
        r = await client.post(
            IMPORT,
            json={
                "profiles": [
                    {"id": known, "custom_properties": props(1)},
                    {"id": "1759319234567890987", "custom_properties": props(1)},
                ]
            },
            headers=AUTH,
        )
    assert_error_body(r, 400, "Bad request.")
    assert "profiles[1].id" in r.json()["message"]
    assert ocamba_sim(app).profiles[known].custom_properties == {}


@pytest.mark.parametrize(
    ("prop", "why"),
    [
        ({"type": "number", "value": 3}, "type 'number' is not supported; use 'string'"),
        ({"type": "boolean", "value": True}, "type 'boolean' is not supported"),
        ({"type": "date", "value": "2024-01-01"}, "type 'date' is not supported"),
        ({"type": "String", "value": "x"}, "type 'String' is not supported"),
        ({"type": "string", "value": 3}, "value must be a string"),
        ({"type": "string"}, "value is required"),
        ({"value": "x"}, "type must be a string"),
    ],
)
async def test_import_takes_only_the_documented_string_type(prop: dict[str, Any], why: str) -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        pid = (await create(client, email="t@x.io")).json()["id"]
        properties = {"ok": {"type": "string", "value": "fine"}, "bad": prop}
        r = await client.post(
            IMPORT, json={"profiles": [{"id": pid, "custom_properties": properties}]}, headers=AUTH
        )
    assert_error_body(r, 400, "Bad request.")
    assert f"profiles[0].custom_properties.bad.{why}" in r.json()["message"]
    assert ocamba_sim(app).profiles[pid].custom_properties == {}


async def test_import_allows_100_properties_and_refuses_101() -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        pid = (await create(client, email="p@x.io")).json()["id"]
        ok = await client.post(
            IMPORT, json={"profiles": [{"id": pid, "custom_properties": props(100)}]}, headers=AUTH
        )
        too_many = await client.post(
            IMPORT, json={"profiles": [{"id": pid, "custom_properties": props(101)}]}, headers=AUTH
        )
    assert ok.status_code == 202
    assert_error_body(too_many, 400, "Bad request.")
    assert "101" in too_many.json()["message"]


async def test_import_refuses_a_duplicate_id_in_one_request() -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        pid = (await create(client, email="d@x.io")).json()["id"]
        r = await client.post(
            IMPORT,
            json={
                "profiles": [
                    {"id": pid, "custom_properties": props(1)},
                    {"id": pid, "custom_properties": props(2)},
                ]
            },
            headers=AUTH,
        )
    assert_error_body(r, 400, "Bad request.")
    assert ocamba_sim(app).profiles[pid].custom_properties == {}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"profiles": []},
        {"profiles": [{"custom_properties": {}}]},
        {"profiles": [{"id": 1759319234567890987, "custom_properties": {}}]},
        {"profiles": [{"id": "{known}"}]},
        {"profiles": [{"id": "{known}", "custom_properties": {"x": "plain"}}]},
        {"profiles": [{"id": "{known}", "custom_properties": {"x": {"value": 1}}}]},
        {"profiles": [{"id": "{known}", "custom_properties": {"x": {"type": "string"}}}]},
    ],
)
async def test_import_refuses_malformed_bodies(body: dict[str, Any]) -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        known = (await create(client, email="m@x.io")).json()["id"]
        for profile in body.get("profiles", []):
            if profile.get("id") == "{known}":
                profile["id"] = known
        r = await client.post(IMPORT, json=body, headers=AUTH)
    assert_error_body(r, 400, "Bad request.")


async def test_fixed_windows_refuse_with_retry_after_and_headers() -> None:
    clock = FakeClock(1_000.2)  # second window [1000, 1001), minute window [1000, 1010)
    app = create_ocamba_app(per_second=3, per_minute=5, minute_window=10.0, clock=clock)
    sim = ocamba_sim(app)
    async with asgi_client(app) as client:
        burst = [await create(client, email=f"b{i}@x.io") for i in range(4)]
        assert [r.status_code for r in burst] == [201, 201, 201, 429]
        assert [r.headers["X-RateLimit-Remaining"] for r in burst] == ["4", "3", "2", "2"]
        refused = burst[3]
        assert refused.headers["Retry-After"] == "1"  # ceil(1001 - 1000.2)
        assert refused.headers["X-RateLimit-Reset"] == "10"  # ceil(1010 - 1000.2)
        assert_error_body(refused, 429, "Too many requests.")

        clock.now = 1_001.1  # next second window, same minute window
        pid = burst[0].json()["id"]
        imported = await client.post(
            IMPORT, json={"profiles": [{"id": pid, "custom_properties": props(1)}]}, headers=AUTH
        )
        fifth = await create(client, email="b5@x.io")
        steady = await create(client, email="b6@x.io")
        assert [imported.status_code, fifth.status_code, steady.status_code] == [202, 201, 429]
        assert steady.headers["Retry-After"] == "9"  # the minute window: ceil(1010 - 1001.1)
        assert steady.headers["X-RateLimit-Remaining"] == "0"

        clock.now = 1_010.0  # a new minute window
        assert (await create(client, email="b7@x.io")).status_code == 201

    stats = sim.limiter.stats
    assert stats.throttled_window == 2 and stats.throttled_concurrency == 0
    assert stats.max_admitted_second_window == 3
    assert stats.max_admitted_minute_window == 5
    assert stats.max_arrivals_second_window == 4
    assert stats.max_arrivals_minute_window == 7


async def test_windows_follow_the_real_clock_by_default() -> None:
    app = create_ocamba_app(per_second=1000, per_minute=7)
    async with asgi_client(app) as client:
        answers = [await create(client, email=f"r{i}@x.io") for i in range(8)]
    # A wall-clock minute boundary can fall inside the loop; then one more is admitted.
    statuses = [r.status_code for r in answers]
    assert statuses.count(429) in (0, 1) and statuses[:7] == [201] * 7
    assert 1 <= int(answers[-1].headers["X-RateLimit-Reset"]) <= 60


async def test_too_many_in_flight_is_429_with_retry_after_minus_one() -> None:
    app = create_ocamba_app(max_in_flight=2, per_second=100, per_minute=1000)
    sim = ocamba_sim(app)
    sim.faults.delay = 0.3  # holds admitted requests in flight
    async with asgi_client(app) as client:
        held = [asyncio.create_task(create(client, email=f"h{i}@x.io")) for i in range(2)]
        await asyncio.sleep(0.1)
        assert sim.limiter.in_flight(TOKEN) == 2
        refused = await create(client, email="third@x.io")
        done = await asyncio.gather(*held)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "-1"
    assert "X-RateLimit-Remaining" in refused.headers
    assert [r.status_code for r in done] == [201, 201]
    assert sim.limiter.stats.throttled_concurrency == 1
    assert sim.limiter.stats.max_in_flight_seen == 2
    assert sim.limiter.in_flight(TOKEN) == 0


async def test_error_fault_answers_the_documented_500() -> None:
    app = create_ocamba_app()
    ocamba_sim(app).faults.error_rate = 1.0
    async with asgi_client(app) as client:
        r = await create(client, email="e@x.io")
    assert r.status_code == 500
    assert list(r.json()) == ["code", "title", "trace_id"]
    assert r.json()["title"] == "Internal server error."
    assert ocamba_sim(app).profiles == {}
    assert ocamba_sim(app).limiter.stats.admitted == 1  # a failing request still used quota


async def test_throttle_fault_answers_429_with_its_retry_after() -> None:
    app = create_ocamba_app()
    sim = ocamba_sim(app)
    sim.faults.throttle_rate = 1.0
    sim.faults.retry_after = 2.0
    async with asgi_client(app) as client:
        r = await create(client, email="t@x.io")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert sim.profiles == {}


async def test_outage_answers_503_to_everything() -> None:
    app = create_ocamba_app()
    ocamba_sim(app).faults.outage = True
    async with asgi_client(app) as client:
        r = await create(client, email="o@x.io")
        unauth = await client.post(CREATE, json={"email": "o@x.io"})
    assert r.status_code == 503 and unauth.status_code == 503
    assert r.json()["title"] == "Service unavailable."


async def test_timeout_fault_hangs_then_answers_504() -> None:
    app = create_ocamba_app()
    sim = ocamba_sim(app)
    sim.faults.timeout_rate = 1.0
    sim.faults.hang_seconds = 0.2
    async with asgi_client(app) as client:
        started = time.monotonic()
        r = await create(client, email="slow@x.io")
    assert r.status_code == 504 and time.monotonic() - started >= 0.2
    assert sim.profiles == {}


async def test_a_client_timeout_releases_the_in_flight_slot() -> None:
    app = create_ocamba_app()
    sim = ocamba_sim(app)
    sim.faults.timeout_rate = 1.0
    sim.faults.hang_seconds = 10.0
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(CREATE, json={"email": "gone@x.io"}, headers=AUTH, timeout=0.2)
        await eventually(lambda: sim.limiter.in_flight(TOKEN) == 0)
    assert sim.received.statuses() == [504]


async def test_delay_fault_slows_every_answer() -> None:
    app = create_ocamba_app()
    ocamba_sim(app).faults.delay = 0.15
    async with asgi_client(app) as client:
        started = time.monotonic()
        ok = await create(client, email="d@x.io")
        refused = await client.post(CREATE, json={"email": "d@x.io"})
    assert ok.status_code == 201 and refused.status_code == 401
    assert time.monotonic() - started >= 0.3


async def test_seeded_partial_faults_are_deterministic() -> None:
    async def run() -> list[int]:
        app = create_ocamba_app(seed=7, per_second=1000, per_minute=1000)
        ocamba_sim(app).faults.error_rate = 0.5
        async with asgi_client(app) as client:
            return [(await create(client, email=f"s{i}@x.io")).status_code for i in range(30)]

    first, second = await run(), await run()
    assert first == second
    assert 5 <= first.count(500) <= 25 and first.count(201) == 30 - first.count(500)


async def test_fault_control_endpoints() -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        assert (await client.get("/_sim/faults")).json()["error_rate"] == 0.0
        put = await client.put("/_sim/faults", json={"throttle_rate": 1, "retry_after": 3})
        assert put.status_code == 200 and put.json()["throttle_rate"] == 1.0
        r = await create(client, email="f@x.io")
        assert r.status_code == 429 and r.headers["Retry-After"] == "3"
        # A PUT replaces the faults whole: what it leaves out goes back to off.
        await client.put("/_sim/faults", json={"delay": 0})
        assert ocamba_sim(app).faults.throttle_rate == 0.0
        assert (await client.put("/_sim/faults", json={"error_rate": 2})).status_code == 422
        assert (await client.put("/_sim/faults", json={"eror_rate": 1})).status_code == 422


async def test_received_log_records_every_business_request() -> None:
    app = create_ocamba_app()
    async with asgi_client(app) as client:
        await create(client, email="l@x.io")
        await client.post(CREATE, json={"email": "l@x.io"})
        log = (await client.get("/_sim/received")).json()
        assert [(e["path"], e["status"]) for e in log] == [(CREATE, 201), (CREATE, 401)]
        assert log[0]["body"] == {"email": "l@x.io"}
        assert log[0]["headers"]["authorization"] == f"Bearer {TOKEN}"
        assert log[0]["size"] == len(b'{"email":"l@x.io"}')
        assert log[0]["at"] <= log[1]["at"]
        assert (await client.delete("/_sim/received")).status_code == 204
        assert (await client.get("/_sim/received")).json() == []
        stats = (await client.get("/_sim/stats")).json()
        assert stats["admitted"] == 1 and stats["profiles"] == 1
        assert len((await client.get("/_sim/profiles")).json()) == 1
