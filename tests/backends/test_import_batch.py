from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from gateway.backends.base import Outcome
from gateway.backends.import_batch import IMPORT_PATH, MAX_BYTES, ImportBatchAdapter
from gateway.config import Settings
from gateway.simulators.import_batch import create_import_batch_app, import_batch_sim
from tests.backends.fakes import Backend, item, sender

pytestmark = pytest.mark.anyio


def settings(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "import_batch_url": "http://ib.test",
        "import_batch_token": "ib-token",
        "import_batch_db_id": 7,
    }
    values.update(changes)
    return Settings(**values)


def adapter(backend: Backend, **changes: Any) -> ImportBatchAdapter:
    return ImportBatchAdapter(settings(**changes), sender("import_batch", backend.client()))


def ok_for_each(request: httpx.Request) -> httpx.Response:
    data = msgspec.json.decode(request.content)["data"]
    result = [
        {"error": 0, "error_text": "Successful operation", "profile_id": f"pid-{i}"}
        for i in range(len(data))
    ]
    return httpx.Response(
        200, json={"error": 0, "error_text": "Successful operation", "result": result}
    )


def answer(body: Any, status: int = 200) -> Backend:
    return Backend(lambda r: httpx.Response(status, json=body))


def by_id(outcomes: list[Outcome]) -> dict[int, Outcome]:
    return {o.delivery_id: o for o in outcomes}


async def test_request_body_has_the_documented_shape() -> None:
    backend = Backend(ok_for_each)
    await adapter(backend).deliver(
        [
            item(
                1,
                first_name="Lala",
                last_name="Doe",
                email="lala@example.com",
                phone="+79000000000",
                gender="female",
                birth_date="1990-01-02",
                attributes={"Custom_ID": 77, "vip": True, "plan": "gold"},
            ),
            item(2, first_name="Victor", email="victor@example.com"),
        ]
    )

    assert backend.paths() == [IMPORT_PATH]
    assert backend.bodies() == [
        {
            "token": "ib-token",
            "db_id": 7,
            "matching": "email",
            "data": [
                {
                    "_fname": "Lala",
                    "_lname": "Doe",
                    "email": "lala@example.com",
                    "phone": "+79000000000",
                    "Custom_ID": 77,
                    "vip": True,
                    "plan": "gold",
                    "external_id": "crm-1",
                },
                {"_fname": "Victor", "email": "victor@example.com", "external_id": "crm-2"},
            ],
        }
    ]
    assert "authorization" not in backend.requests[0].headers  # the token is in the body


async def test_custom_matching_matches_on_the_external_id() -> None:
    backend = Backend(ok_for_each)
    await adapter(backend, import_batch_matching="custom").deliver([item(1, phone="+79000000000")])
    (body,) = backend.bodies()
    assert body["matching"] == "custom"
    assert body["field_name"] == "external_id"
    assert body["data"] == [{"phone": "+79000000000", "external_id": "crm-1"}]


async def test_profile_id_matching_sends_the_known_id() -> None:
    backend = Backend(ok_for_each)
    await adapter(backend, import_batch_matching="profile_id").deliver(
        [item(1, "abc123", email="a@example.com"), item(2, email="b@example.com")]
    )
    data = backend.bodies()[0]["data"]
    assert data[0]["profile_id"] == "abc123"
    assert "profile_id" not in data[1]


async def test_results_are_read_in_input_order() -> None:
    backend = answer(
        {
            "error": 0,
            "error_text": "Successful operation",
            "result": [
                {"error": 0, "error_text": "Successful operation", "profile_id": "p-first"},
                {"error": 103, "error_text": "Invalid email"},
                {"error": 0, "error_text": "Successful operation", "profile_id": "p-third"},
            ],
        }
    )
    outcomes = await adapter(backend).deliver(
        [item(5, email="a@example.com"), item(3, email="b@x"), item(9, email="c@example.com")]
    )
    assert outcomes == [
        Outcome(5, "confirmed", backend_id="p-first"),
        Outcome(3, "failed", "import_batch error 103: Invalid email"),
        Outcome(9, "confirmed", backend_id="p-third"),
    ]


@pytest.mark.parametrize("count", [0, 1, 3])
async def test_a_result_of_the_wrong_length_retries_everything(count: int) -> None:
    result = [{"error": 0, "error_text": "ok", "profile_id": f"p{i}"} for i in range(count)]
    backend = answer({"error": 0, "error_text": "ok", "result": result})
    outcomes = await adapter(backend).deliver(
        [item(1, email="a@example.com"), item(2, email="b@example.com")]
    )
    error = (
        f"import_batch import: {count} results for 2 profiles;"
        " cannot tell which result belongs to which profile"
    )
    assert outcomes == [Outcome(1, "retry", error), Outcome(2, "retry", error)]


async def test_an_unreadable_answer_is_retried() -> None:
    backend = Backend(lambda r: httpx.Response(200, text="<xml>ok</xml>"))
    outcomes = await adapter(backend).deliver([item(1, email="a@example.com")])
    assert outcomes[0].state == "retry"
    assert str(outcomes[0].error).startswith("import_batch import: unreadable answer")


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5])
async def test_top_level_error_about_the_request_fails_all(code: int) -> None:
    backend = answer({"error": code, "error_text": "Invalid parameter: db_id"})
    outcomes = await adapter(backend).deliver(
        [item(1, email="a@example.com"), item(2, email="b@example.com")]
    )
    error = f"import_batch import: error {code}: Invalid parameter: db_id"
    assert outcomes == [Outcome(1, "failed", error), Outcome(2, "failed", error)]


@pytest.mark.parametrize("code", [8, 9, 10, 11, 99])
async def test_top_level_error_about_the_service_is_retried(code: int) -> None:
    backend = answer({"error": code, "error_text": "Internal server error"})
    outcomes = await adapter(backend).deliver([item(1, email="a@example.com")])
    assert outcomes == [
        Outcome(1, "retry", f"import_batch import: error {code}: Internal server error")
    ]


async def test_http_errors_carry_the_vendors_error_text() -> None:
    backend = answer({"error": 5, "error_text": "Database not found"}, status=404)
    outcomes = await adapter(backend).deliver([item(1, email="a@example.com")])
    assert outcomes == [Outcome(1, "failed", "import_batch import: HTTP 404: Database not found")]


async def test_too_large_is_split_until_it_fits() -> None:
    def at_most_two(request: httpx.Request) -> httpx.Response:
        if len(msgspec.json.decode(request.content)["data"]) > 2:
            return httpx.Response(413, json={"error": 6, "error_text": "Too many profiles"})
        return ok_for_each(request)

    backend = Backend(at_most_two)
    outcomes = await adapter(backend).deliver(
        [item(i, email=f"p{i}@example.com") for i in range(1, 6)]
    )
    assert {o.state for o in outcomes} == {"confirmed"}
    sizes = [len(b["data"]) for b in backend.bodies()]
    assert sizes == [5, 2, 3, 1, 2]


async def test_attribute_named_like_a_gateway_field_fails_that_profile() -> None:
    backend = Backend(ok_for_each)
    outcomes = by_id(
        await adapter(backend).deliver(
            [
                item(1, email="a@example.com", attributes={"email": "other@example.com"}),
                item(2, email="b@example.com", attributes={"_fname": "X"}),
                item(3, email="c@example.com", attributes={"tier": 1}),
            ]
        )
    )
    assert outcomes[1].state == outcomes[2].state == "failed"
    assert "attribute 'email'" in str(outcomes[1].error)
    assert outcomes[3].state == "confirmed"
    assert [d["email"] for d in backend.bodies()[0]["data"]] == ["c@example.com"]


async def test_requests_stay_under_the_vendors_size_advice() -> None:
    backend = Backend(ok_for_each)
    big = "x" * 3_000_000
    outcomes = await adapter(backend).deliver(
        [item(i, email=f"p{i}@example.com", attributes={"blob": big}) for i in range(1, 6)]
    )
    assert {o.state for o in outcomes} == {"confirmed"}
    assert all(len(r.content) <= MAX_BYTES for r in backend.requests)
    assert [len(b["data"]) for b in backend.bodies()] == [3, 2]


async def test_batch_size_comes_from_settings() -> None:
    backend = Backend(ok_for_each)
    ib = adapter(backend, import_batch_batch_size=2)
    assert ib.batch_size == 2
    await ib.deliver([item(i, email=f"p{i}@example.com") for i in range(1, 6)])
    assert [len(b["data"]) for b in backend.bodies()] == [2, 2, 1]


# -- against the import_batch simulator ------------------------------------


async def test_simulator_confirms_good_profiles_and_names_the_bad_ones() -> None:
    app = create_import_batch_app(token="ib-token", db_id=7, seed=1)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    ib = ImportBatchAdapter(
        settings(), sender("import_batch", client, base_url="http://ib.test/api")
    )

    outcomes = by_id(
        await ib.deliver(
            [
                item(1, email="a@example.com", first_name="Ann", attributes={"tier": 2}),
                item(2, phone="+79000000000"),  # no email to match on
                item(3, email="b@example.com", phone="+12"),  # not a possible number
                item(4, email="a@example.com", last_name="Again"),
            ]
        )
    )

    sim = import_batch_sim(app)
    assert outcomes[1].state == "confirmed"
    assert outcomes[4] == Outcome(4, "confirmed", backend_id=outcomes[1].backend_id)
    assert outcomes[2] == Outcome(
        2, "failed", "import_batch error 102: Missing matching field: email"
    )
    assert outcomes[3] == Outcome(
        3, "failed", "import_batch error 104: Invalid phone: E.164 expected"
    )
    stored = sim.profiles[str(outcomes[1].backend_id)].fields
    assert stored["_fname"] == "Ann"
    assert stored["_lname"] == "Again"
    assert stored["tier"] == 2
    assert stored["external_id"] == "crm-4"


async def test_simulator_custom_matching_on_external_id() -> None:
    app = create_import_batch_app(token="ib-token", db_id=7)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    ib = ImportBatchAdapter(
        settings(import_batch_matching="custom"),
        sender("import_batch", client, base_url="http://ib.test/api"),
    )
    first = await ib.deliver([item(1, external_id="crm-9", email="old@example.com")])
    second = await ib.deliver([item(2, external_id="crm-9", email="new@example.com")])

    assert first[0].state == second[0].state == "confirmed"
    assert first[0].backend_id == second[0].backend_id
    sim = import_batch_sim(app)
    assert len(sim.profiles) == 1
    found = sim.store.find("custom:external_id", "crm-9")
    assert found is not None and found.fields["email"] == "new@example.com"


async def test_simulator_wrong_token_fails_with_its_text() -> None:
    app = create_import_batch_app(token="the-right-one", db_id=7)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    ib = ImportBatchAdapter(
        settings(), sender("import_batch", client, base_url="http://ib.test/api")
    )
    outcomes = await ib.deliver([item(1, email="a@example.com")])
    assert outcomes == [Outcome(1, "failed", "import_batch import: HTTP 401: Invalid token")]
