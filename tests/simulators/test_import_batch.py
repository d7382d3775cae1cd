from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from gateway.simulators.import_batch import (
    PROFILE_ERRORS,
    ErrorCode,
    create_import_batch_app,
    import_batch_sim,
)
from tests.simulators.helpers import asgi_client

pytestmark = pytest.mark.anyio

TOKEN = "import-batch-token"
PATH = "/api/v1.1/profiles/import_batch"
INVALID = ErrorCode.INVALID_PARAMETER
OK = {"error": 0, "error_text": "Successful operation"}


async def send(client: httpx.AsyncClient, data: list[Any], **params: Any) -> httpx.Response:
    return await client.post(PATH, json={"token": TOKEN, "db_id": 1, "data": data, **params})


def ids(response: httpx.Response) -> list[str | None]:
    return [item.get("profile_id") for item in response.json()["result"]]


async def test_documented_request_gets_results_in_input_order() -> None:
    app = create_import_batch_app()
    async with asgi_client(app) as client:
        r = await send(
            client,
            [
                {"_fname": "Lala", "_lname": "Doe", "email": "lala@example.com"},
                {"_fname": "Victor", "email": "victor@example.com"},
                {"_fname": "Alex", "email": "alex@example.com"},
            ],
            skip_triggers=True,
        )
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["error", "error_text", "result"]
    assert {k: body[k] for k in OK} == OK
    assert [list(item) for item in body["result"]] == [["error", "error_text", "profile_id"]] * 3
    assert all(re.fullmatch(r"[0-9a-f]{24}", i or "") for i in ids(r))
    assert len(set(ids(r))) == 3
    stored = import_batch_sim(app).profiles
    assert [stored[i or ""].fields["_fname"] for i in ids(r)] == ["Lala", "Victor", "Alex"]


async def test_the_same_key_always_gets_the_same_id() -> None:
    app = create_import_batch_app()
    async with asgi_client(app) as client:
        first = await send(client, [{"email": "same@x.io", "_fname": "A"}])
        second = await send(client, [{"email": "SAME@x.io", "_lname": "B"}])
    other = create_import_batch_app()  # a restarted simulator hands out the same id
    async with asgi_client(other) as client:
        third = await send(client, [{"email": "same@x.io"}])
    assert ids(first) == ids(second) == ids(third)
    profile = import_batch_sim(app).profiles[ids(first)[0] or ""]
    assert (profile.fields["_fname"], profile.fields["_lname"], profile.imports) == ("A", "B", 2)


async def test_per_profile_errors_keep_their_place() -> None:
    app = create_import_batch_app()
    async with asgi_client(app) as client:
        r = await send(
            client,
            [
                {"email": "ok@x.io"},
                {"_fname": "no email"},
                {"email": "not-an-email"},
                {"email": "p@x.io", "phone": "8 900 000 00 00"},
                "not an object",
                {"email": "ok2@x.io", "phones": ["+79000000000"]},
            ],
        )
    assert r.status_code == 200 and r.json()["error"] == 0
    codes = [item["error"] for item in r.json()["result"]]
    assert codes == [
        0,
        ErrorCode.MATCHING_FIELD_MISSING,
        ErrorCode.INVALID_EMAIL,
        ErrorCode.INVALID_PHONE,
        ErrorCode.INVALID_PROFILE,
        0,
    ]
    assert all(c in PROFILE_ERRORS for c in codes if c)
    failed = r.json()["result"][1]
    assert list(failed) == ["error", "error_text"] and failed["error_text"]
    assert len(import_batch_sim(app).profiles) == 2


async def test_matching_by_phone_custom_field_and_profile_id() -> None:
    app = create_import_batch_app(fields=("Custom_ID",))  # the doc's example database
    async with asgi_client(app) as client:
        by_phone = await send(
            client, [{"phone": "+79000000000"}, {"_fname": "x"}], matching="phone"
        )
        custom = await send(
            client,
            [{"Custom_ID": 77, "email": "c@x.io"}, {"Custom_ID": 77, "_fname": "again"}, {}],
            matching="custom",
            field_name="Custom_ID",
        )
        phone_id = ids(by_phone)[0]
        by_id = await send(
            client,
            [{"profile_id": phone_id, "_fname": "Updated"}, {"profile_id": "f" * 24}],
            matching="profile_id",
        )
        email_phone = await send(
            client, [{"phone": "+79000000000"}, {}], matching="email_phone_sub"
        )
    assert [i["error"] for i in by_phone.json()["result"]] == [0, 102]
    assert [i["error"] for i in custom.json()["result"]] == [0, 0, 102]
    assert ids(custom)[0] == ids(custom)[1]
    assert [i["error"] for i in by_id.json()["result"]] == [0, ErrorCode.PROFILE_NOT_FOUND]
    assert ids(by_id)[0] == phone_id
    assert ids(email_phone)[0] == phone_id  # found by phone, no email given
    assert email_phone.json()["result"][1]["error"] == ErrorCode.MATCHING_FIELD_MISSING
    sim = import_batch_sim(app)
    assert sim.profiles[phone_id or ""].fields["_fname"] == "Updated"
    found = sim.store.find("custom:Custom_ID", "77")
    assert found is not None and found.fields["_fname"] == "again"


@pytest.mark.parametrize(
    "matching",
    [
        "email",
        "email_profile",
        "email_sub",
        "phone",
        "phone_sub",
        "profile_id",
        "push_sub",
        "custom",
        "custom_sub",
        "email_phone",
        "email_phone_sub",
    ],
)
async def test_every_documented_matching_mode_is_accepted(matching: str) -> None:
    item = {
        "email": "m@x.io",
        "phone": "+4915112345678",
        "CRM_ID": "c-1",
        "subscriptions": [{"channel": "push", "provider": "Firefox", "subscription_id": "s1"}],
    }
    app = create_import_batch_app(fields=("CRM_ID",))
    async with asgi_client(app) as client:
        r = await send(client, [item], matching=matching, field_name="CRM_ID")
    assert r.status_code == 200
    expected = ErrorCode.MATCHING_FIELD_MISSING if matching == "profile_id" else 0
    assert r.json()["result"][0]["error"] == expected


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, ErrorCode.INVALID_REQUEST),
        (b"<xml><token>t</token></xml>", 400, ErrorCode.INVALID_REQUEST),
        (b"[]", 400, ErrorCode.INVALID_REQUEST),
        (b'{"db_id": 1, "data": []}', 400, ErrorCode.MISSING_PARAMETER),
        (b'{"token": 5, "db_id": 1, "data": []}', 400, ErrorCode.INVALID_PARAMETER),
        (b'{"token": "wrong", "db_id": 1, "data": []}', 401, ErrorCode.INVALID_TOKEN),
        (f'{{"token": "{TOKEN}", "data": []}}'.encode(), 400, ErrorCode.MISSING_PARAMETER),
        (f'{{"token": "{TOKEN}", "db_id": "1", "data": []}}'.encode(), 400, INVALID),
        (f'{{"token": "{TOKEN}", "db_id": 1}}'.encode(), 400, ErrorCode.MISSING_PARAMETER),
        (f'{{"token": "{TOKEN}", "db_id": 1, "data": {{}}}}'.encode(), 400, INVALID),
        (
            f'{{"token": "{TOKEN}", "db_id": 1, "data": [], "matching": "fuzzy"}}'.encode(),
            400,
            ErrorCode.INVALID_PARAMETER,
        ),
        (
            f'{{"token": "{TOKEN}", "db_id": 1, "data": [], "matching": "custom"}}'.encode(),
            400,
            ErrorCode.MISSING_PARAMETER,
        ),
        (
            f'{{"token": "{TOKEN}", "db_id": 1, "data": [], "skip_triggers": "yes"}}'.encode(),
            400,
            ErrorCode.INVALID_PARAMETER,
        ),
        (
            f'{{"token": "{TOKEN}", "db_id": 2, "data": []}}'.encode(),
            404,
            ErrorCode.DATABASE_NOT_FOUND,
        ),
    ],
)
async def test_request_level_errors(content: bytes, status: int, code: int) -> None:
    app = create_import_batch_app()
    async with asgi_client(app) as client:
        r = await client.post(PATH, content=content)
    assert r.status_code == status
    body = r.json()
    assert list(body) == ["error", "error_text"]
    assert body["error"] == code and body["error_text"]
    assert import_batch_sim(app).received.statuses() == [status]


async def test_too_many_profiles_or_bytes_is_413() -> None:
    app = create_import_batch_app(max_profiles=3, max_bytes=400)
    async with asgi_client(app) as client:
        fits = await send(client, [{"email": f"{i}@x.io"} for i in range(3)])
        too_many = await send(client, [{"email": f"{i}@x.io"} for i in range(4)])
        too_big = await send(client, [{"email": "big@x.io", "note": "x" * 400}])
    assert fits.status_code == 200
    assert too_many.status_code == 413 and too_many.json()["error"] == ErrorCode.TOO_MANY_PROFILES
    assert too_big.status_code == 413 and too_big.json()["error"] == ErrorCode.REQUEST_TOO_LARGE
    assert len(import_batch_sim(app).profiles) == 3


async def test_faults_answer_in_the_vendor_shape() -> None:
    app = create_import_batch_app()
    sim = import_batch_sim(app)
    async with asgi_client(app) as client:
        sim.faults.error_rate = 1.0
        error = await send(client, [{"email": "f@x.io"}])
        sim.faults.error_rate, sim.faults.outage = 0.0, True
        outage = await send(client, [{"email": "f@x.io"}])
    assert error.status_code == 500
    assert error.json() == {
        "error": ErrorCode.INTERNAL_ERROR,
        "error_text": "Internal server error",
    }
    assert outage.status_code == 503 and outage.json()["error"] == ErrorCode.SERVICE_UNAVAILABLE
    assert sim.profiles == {}
    assert sim.received.statuses() == [500, 503]


async def test_a_field_the_database_lacks_is_refused_for_that_profile_only() -> None:
    app = create_import_batch_app(fields=("CRM_ID", "Tier"))
    async with asgi_client(app) as client:
        r = await send(
            client,
            [
                {"email": "a@x.io", "_fname": "A", "_bdate": "1990-01-02", "CRM_ID": "1"},
                {"email": "b@x.io", "Tier": "gold", "tier": "gold"},
                {"email": "c@x.io", "_nickname": "C"},
                {"email": "d@x.io", "external_id": "d-1"},
            ],
        )
    assert r.status_code == 200
    results = r.json()["result"]
    assert [item["error"] for item in results] == [0, 106, 106, 106]
    assert [item["error_text"] for item in results[1:]] == [
        "Unknown field: tier",
        "Unknown system field: _nickname",
        "Unknown field: external_id",
    ]
    sim = import_batch_sim(app)
    assert [p.fields["email"] for p in sim.profiles.values()] == ["a@x.io"]
    assert sim.stats()["profile_errors"] == {"106": 3}
    assert sim.stats()["custom_fields"] == ["CRM_ID", "Tier"]


async def test_field_name_must_be_a_custom_field_of_the_database() -> None:
    app = create_import_batch_app(fields=("CRM_ID",))
    async with asgi_client(app) as client:
        wrong = await send(
            client,
            [{"email": "a@x.io", "CRM_ID": "1"}, {"email": "b@x.io", "CRM_ID": "2"}],
            matching="custom",
            field_name="external_id",
        )
        system = await send(
            client, [{"_fname": "A", "CRM_ID": "1"}], matching="custom_sub", field_name="_fname"
        )
        right = await send(
            client, [{"email": "a@x.io", "CRM_ID": "1"}], matching="custom", field_name="CRM_ID"
        )
    assert wrong.status_code == system.status_code == 200
    expected = {
        "error": ErrorCode.UNKNOWN_MATCHING_FIELD,
        "error_text": "field_name 'external_id' is not a custom field of this database",
    }
    assert wrong.json()["result"] == [expected, expected]
    assert system.json()["result"][0]["error"] == ErrorCode.UNKNOWN_MATCHING_FIELD
    assert right.json()["result"][0]["error"] == 0
    assert len(import_batch_sim(app).profiles) == 1


async def test_default_database_has_the_fields_the_gateway_and_demo_send() -> None:
    app = create_import_batch_app()
    async with asgi_client(app) as client:
        r = await send(
            client,
            [
                {
                    "external_id": "demo-1",
                    "email": "jane@example.com",
                    "_fname": "J",
                    "tier": "gold",
                    "since": "2021-04-01",
                }
            ],
            matching="custom",
            field_name="external_id",
        )
        other = await send(client, [{"external_id": "demo-2", "CRM_ID": "7"}])
    assert r.json()["result"][0]["error"] == 0
    assert other.json()["result"][0]["error"] == ErrorCode.UNKNOWN_FIELD
