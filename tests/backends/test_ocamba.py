from __future__ import annotations

import itertools
from typing import Any

import httpx
import msgspec
import pytest

from gateway.backends.base import Outcome
from gateway.backends.ocamba import (
    CANNOT_UPDATE,
    CREATE_PATH,
    IMPORT_PATH,
    NEEDS_CONTACT,
    OcambaAdapter,
)
from gateway.backends.transport.pacing import FixedWindowPacer
from gateway.config import Settings
from gateway.simulators.common import Faults
from gateway.simulators.ocamba import create_ocamba_app, ocamba_sim
from tests.backends.fakes import Backend, item, sender
from tests.dispatch.fakes import FakeClock

pytestmark = pytest.mark.anyio

SETTINGS = Settings(ocamba_url="http://ocamba.test", ocamba_import_batch_size=100)
ACCEPTED_202 = {
    "message": "Profiles have been queued for processing.",
    "publish_time": "2026-04-28 12:00:00",
    "request_id": "f2617fdf782b82acce8ce0a4bd5dc3f1",
    "status": "accepted",
}
BAD_400 = {"code": 400, "title": "Bad request.", "message": "The request is not valid."}


class FakeOcamba(Backend):
    """Creates answer 201 with ids 9001, 9002, ...; imports answer 202."""

    def __init__(self) -> None:
        super().__init__(self.answer)
        self.ids = itertools.count(9001)
        self.create_replies: dict[int, httpx.Response] = {}  # by create call number
        self.import_replies: dict[int, httpx.Response] = {}
        self.bad_ids: set[str] = set()  # an import naming one of these gets 400

    def answer(self, request: httpx.Request) -> httpx.Response:
        calls = sum(1 for r in self.requests if r.url.path == request.url.path)
        if request.url.path == CREATE_PATH:
            if calls in self.create_replies:
                return self.create_replies[calls]
            return httpx.Response(201, json={"id": str(next(self.ids)), "status": "1"})
        if calls in self.import_replies:
            return self.import_replies[calls]
        ids = {p["id"] for p in msgspec.json.decode(request.content)["profiles"]}
        if ids & self.bad_ids:
            return httpx.Response(400, json=BAD_400)
        return httpx.Response(202, json=ACCEPTED_202)


def adapter(backend: Backend, settings: Settings = SETTINGS, **kwargs: Any) -> OcambaAdapter:
    return OcambaAdapter(settings, sender("ocamba", backend.client()), **kwargs)


def by_id(outcomes: list[Outcome]) -> dict[int, Outcome]:
    return {o.delivery_id: o for o in outcomes}


async def test_create_body_has_only_the_documented_fields() -> None:
    backend = FakeOcamba()
    outcomes = await adapter(backend).deliver(
        [
            item(
                1,
                email="jane@example.com",
                phone="+49234432234",
                phone_country="DE",
                first_name="Jane",
                last_name="Doe",
                company="ACME",
                gender="female",
                tags=["vip"],
            )
        ]
    )

    assert backend.bodies(CREATE_PATH) == [
        {
            "email": "jane@example.com",
            "mobile_phone_number": "+49234432234",
            "full_name": "Jane Doe",
        }
    ]
    assert outcomes == [Outcome(1, "confirmed", backend_id="9001")]


async def test_full_name_wins_over_first_and_last_and_absent_fields_are_left_out() -> None:
    backend = FakeOcamba()
    await adapter(backend).deliver(
        [
            item(1, phone="+4930123456", full_name="J. Doe", first_name="Jane"),
            item(2, email="solo@example.com"),
        ]
    )
    assert backend.bodies(CREATE_PATH) == [
        {"mobile_phone_number": "+4930123456", "full_name": "J. Doe"},
        {"email": "solo@example.com"},
    ]


async def test_no_email_and_no_phone_fails_without_a_call() -> None:
    backend = FakeOcamba()
    outcomes = await adapter(backend).deliver([item(1, first_name="Nobody")])
    assert outcomes == [Outcome(1, "failed", NEEDS_CONTACT)]
    assert backend.requests == []


async def test_create_then_import_carries_the_new_id() -> None:
    backend = FakeOcamba()
    outcomes = await adapter(backend).deliver(
        [
            item(1, email="a@example.com", attributes={"plan": "gold", "score": 7}),
            item(2, email="b@example.com", attributes={"vip": True, "since": "2024-02-29"}),
        ]
    )

    assert backend.paths() == [CREATE_PATH, CREATE_PATH, IMPORT_PATH]
    assert backend.bodies(IMPORT_PATH) == [
        {
            "profiles": [
                {
                    "id": "9001",
                    "custom_properties": {
                        "plan": {"type": "string", "value": "gold"},
                        "score": {"type": "string", "value": "7"},
                    },
                },
                {
                    "id": "9002",
                    "custom_properties": {
                        "vip": {"type": "string", "value": "true"},
                        "since": {"type": "string", "value": "2024-02-29"},
                    },
                },
            ]
        }
    ]
    assert by_id(outcomes) == {
        1: Outcome(1, "accepted", backend_id="9001"),
        2: Outcome(2, "accepted", backend_id="9002"),
    }


async def test_known_profile_only_imports() -> None:
    backend = FakeOcamba()
    outcomes = await adapter(backend).deliver(
        [item(1, backend_id="777", email="a@example.com", attributes={"plan": "gold"})]
    )
    assert backend.paths() == [IMPORT_PATH]
    assert backend.bodies(IMPORT_PATH)[0]["profiles"][0]["id"] == "777"
    # Ocamba keeps the email it has: never remembered as sent.
    assert outcomes == [Outcome(1, "accepted", backend_id="777", not_applied=frozenset({"email"}))]


async def test_known_profile_with_only_contact_fields_is_unsupported_with_nothing_sent() -> None:
    backend = FakeOcamba()
    outcomes = await adapter(backend).deliver(
        [item(1, backend_id="777", email="new@example.com", full_name="Changed Name")]
    )
    assert backend.requests == []
    assert [(o.state, o.backend_id) for o in outcomes] == [("unsupported", "777")]
    assert outcomes[0].error is not None
    assert outcomes[0].error.startswith(CANNOT_UPDATE)
    assert "email, full_name" in outcomes[0].error


async def test_more_than_100_attributes_fails_before_any_call() -> None:
    backend = FakeOcamba()
    attributes = {f"a{i}": i for i in range(101)}
    outcomes = await adapter(backend).deliver(
        [item(1, email="a@example.com", attributes=attributes)]
    )
    assert backend.requests == []
    assert outcomes[0].state == "failed"
    assert outcomes[0].error == (
        "Ocamba accepts at most 100 custom properties per profile; this profile has 101"
    )


async def test_exactly_100_attributes_are_sent() -> None:
    backend = FakeOcamba()
    attributes = {f"a{i}": i for i in range(100)}
    outcomes = await adapter(backend).deliver(
        [item(1, backend_id="5", email="a@example.com", attributes=attributes)]
    )
    assert outcomes[0].state == "accepted"
    assert len(backend.bodies(IMPORT_PATH)[0]["profiles"][0]["custom_properties"]) == 100


async def test_a_refused_create_fails_that_item_only() -> None:
    backend = FakeOcamba()
    backend.create_replies[1] = httpx.Response(400, json=BAD_400)
    outcomes = by_id(
        await adapter(backend).deliver(
            [
                item(1, email="bad@example.com", attributes={"x": 1}),
                item(2, email="ok@example.com", attributes={"x": 2}),
            ]
        )
    )
    assert outcomes[1] == Outcome(1, "failed", "ocamba create: HTTP 400: The request is not valid.")
    assert outcomes[2] == Outcome(2, "accepted", backend_id="9001")
    assert [p["id"] for p in backend.bodies(IMPORT_PATH)[0]["profiles"]] == ["9001"]


async def test_transient_create_retries_the_rest_and_keeps_ids_already_created() -> None:
    backend = FakeOcamba()
    backend.create_replies[2] = httpx.Response(
        429, json={"code": 429, "message": "Rate limit exceeded."}, headers={"Retry-After": "12"}
    )
    outcomes = by_id(
        await adapter(backend).deliver(
            [
                item(1, email="a@example.com", attributes={"x": 1}),
                item(2, email="b@example.com"),
                item(3, email="c@example.com"),
                item(4, backend_id="444", attributes={"x": 4}),
            ]
        )
    )

    error = "ocamba create: HTTP 429: Rate limit exceeded."
    assert backend.paths() == [CREATE_PATH, CREATE_PATH]  # no further call after the 429
    # Only the call that got the 429 spent an attempt; the rest were never sent.
    assert outcomes[1] == Outcome(
        1, "retry", error, backend_id="9001", retry_after=12.0, sent=False
    )
    assert outcomes[2] == Outcome(2, "retry", error, retry_after=12.0, sent=True)
    assert outcomes[3] == Outcome(3, "retry", error, retry_after=12.0, sent=False)
    assert outcomes[4] == Outcome(4, "retry", error, backend_id="444", retry_after=12.0, sent=False)


async def test_the_retry_imports_without_creating_again() -> None:
    backend = FakeOcamba()
    backend.import_replies[1] = httpx.Response(503, json={"message": "busy"})
    first = await adapter(backend).deliver([item(1, email="a@example.com", attributes={"x": 1})])
    assert first == [
        Outcome(1, "retry", "ocamba import: HTTP 503: busy", backend_id="9001", unavailable=True)
    ]

    # The dispatcher hands the recorded backend_id back on the next attempt.
    second = await adapter(backend).deliver(
        [item(1, backend_id=first[0].backend_id, email="a@example.com", attributes={"x": 1})]
    )
    # Known now: the email went with the create, an import cannot carry it.
    assert second == [Outcome(1, "accepted", backend_id="9001", not_applied=frozenset({"email"}))]
    assert backend.paths() == [CREATE_PATH, IMPORT_PATH, IMPORT_PATH]


async def test_imports_go_in_chunks_of_the_configured_size() -> None:
    backend = FakeOcamba()
    settings = Settings(ocamba_url="http://o.test", ocamba_import_batch_size=2)
    items = [item(i, backend_id=str(100 + i), attributes={"n": i}) for i in range(1, 6)]
    ocamba = adapter(backend, settings)
    assert ocamba.batch_size == 2

    outcomes = await ocamba.deliver(items)

    assert [[p["id"] for p in b["profiles"]] for b in backend.bodies(IMPORT_PATH)] == [
        ["101", "102"],
        ["103", "104"],
        ["105"],
    ]
    assert {o.state for o in outcomes} == {"accepted"}


async def test_a_transient_import_error_retries_its_chunk_and_the_rest() -> None:
    backend = FakeOcamba()
    backend.import_replies[2] = httpx.Response(500, json={"code": 500})
    settings = Settings(ocamba_url="http://o.test", ocamba_import_batch_size=2)
    items = [item(i, backend_id=str(100 + i), attributes={"n": i}) for i in range(1, 6)]

    outcomes = by_id(await adapter(backend, settings).deliver(items))

    assert [outcomes[i].state for i in range(1, 6)] == [
        "accepted",
        "accepted",
        "retry",
        "retry",
        "retry",
    ]
    assert outcomes[5].backend_id == "105"
    assert len(backend.bodies(IMPORT_PATH)) == 2


async def test_a_refused_import_is_split_to_find_the_profile_it_is_about() -> None:
    backend = FakeOcamba()
    backend.bad_ids = {"103"}
    items = [item(i, backend_id=str(100 + i), attributes={"n": i}) for i in range(1, 7)]

    outcomes = by_id(await adapter(backend).deliver(items))

    assert outcomes[3] == Outcome(
        3, "failed", "ocamba import: HTTP 400: The request is not valid.", backend_id="103"
    )
    assert all(outcomes[i].state == "accepted" for i in (1, 2, 4, 5, 6))


async def test_splitting_a_refused_import_has_a_budget() -> None:
    backend = FakeOcamba()
    backend.bad_ids = {str(100 + i) for i in range(1, 101)}  # a 400 about everything
    items = [item(i, backend_id=str(100 + i), attributes={"n": i}) for i in range(1, 101)]

    outcomes = await adapter(backend).deliver(items)

    assert {o.state for o in outcomes} == {"failed"}
    assert len(backend.requests) <= 1 + 16


def slow_ocamba(clock: FakeClock) -> FakeOcamba:
    """An Ocamba whose every call takes 4 s of `clock`."""
    backend = FakeOcamba()

    def slow(request: httpx.Request) -> httpx.Response:
        clock.now += 4.0
        return FakeOcamba.answer(backend, request)

    backend.reply = slow
    return backend


async def test_time_budget_hands_the_rest_back_for_later() -> None:
    clock = FakeClock(start=0.0)
    backend = slow_ocamba(clock)
    ocamba = adapter(backend, time_budget=10.0, clock=clock)
    outcomes = by_id(
        await ocamba.deliver(
            [item(i, email=f"p{i}@example.com", attributes={"n": i}) for i in (1, 2, 3, 4)]
        )
    )

    # Calls start at 0, 4 and 8 s; at 12 s the budget is spent.
    assert backend.paths() == [CREATE_PATH, CREATE_PATH, CREATE_PATH]
    assert outcomes[1].state == outcomes[4].state == "retry"
    assert outcomes[1].backend_id == "9001"
    assert outcomes[3].backend_id == "9003"
    assert outcomes[4].backend_id is None
    assert outcomes[4].error is not None and "time budget" in outcomes[4].error
    assert not outcomes[4].sent and not outcomes[1].sent  # handed back: no attempt spent


async def test_real_time_writes_in_a_batch_go_before_its_bulk_creates() -> None:
    clock = FakeClock(start=0.0)
    backend = slow_ocamba(clock)
    ocamba = adapter(backend, time_budget=10.0, clock=clock)
    bulk = [
        msgspec.structs.replace(item(i, email=f"p{i}@example.com"), lane="bulk") for i in (1, 2, 3)
    ]
    realtime = item(4, backend_id="77", attributes={"tier": "gold"})
    outcomes = by_id(await ocamba.deliver([*bulk, realtime]))

    # The known profile's import goes first, though it came last in the batch;
    # the time budget then ends the bulk creates, not the real-time write.
    assert backend.paths()[0] == IMPORT_PATH
    assert outcomes[4].state == "accepted"
    assert outcomes[3].state == "retry"


async def test_a_201_without_an_id_fails_rather_than_create_twice() -> None:
    backend = FakeOcamba()
    backend.create_replies[1] = httpx.Response(201, json={"status": "1"})
    outcomes = await adapter(backend).deliver([item(1, email="a@example.com")])
    assert outcomes[0].state == "failed"
    assert outcomes[0].error is not None and "would create the profile twice" in outcomes[0].error


# -- against the Ocamba simulator ------------------------------------------


def simulated(
    clock: FakeClock, *, server_per_minute: int = 150, pacer_per_minute: int = 150
) -> tuple[Any, OcambaAdapter, FixedWindowPacer]:
    app = create_ocamba_app(
        token="tok", per_second=3, per_minute=server_per_minute, clock=clock, seed=1
    )
    pacer = FixedWindowPacer(3, pacer_per_minute, max_in_flight=2, clock=clock, sleep=clock.sleep)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    ocamba = OcambaAdapter(
        SETTINGS,
        sender(
            "ocamba",
            client,
            base_url="http://ocamba.test",
            pacer=pacer,
            headers={"Authorization": "Bearer tok"},
        ),
    )
    return app, ocamba, pacer


async def test_simulator_gets_profiles_and_properties_within_its_limits() -> None:
    clock = FakeClock(start=3_000.0)
    app, ocamba, pacer = simulated(clock)
    items = [
        item(
            i,
            email=f"p{i}@example.com",
            phone="+4930123456" if i == 1 else None,
            attributes={"n": i, "vip": i % 2 == 0},
        )
        for i in range(1, 8)
    ]

    outcomes = by_id(await ocamba.deliver(items))

    sim = ocamba_sim(app)
    assert {o.state for o in outcomes.values()} == {"accepted"}
    assert sim.limiter.stats.throttled_window == 0
    assert sim.limiter.stats.max_admitted_second_window <= 3
    assert pacer.waited > 0
    for i in range(1, 8):
        stored = sim.profiles[str(outcomes[i].backend_id)]
        assert stored.email == f"p{i}@example.com"
        assert stored.custom_properties == {
            "n": {"type": "string", "value": str(i)},
            "vip": {"type": "string", "value": "true" if i % 2 == 0 else "false"},
        }
    assert sim.profiles[str(outcomes[1].backend_id)].country_code == "DE"


async def test_simulator_exhausted_account_is_waited_out_not_refused() -> None:
    clock = FakeClock(start=3_000.0)
    # Other replicas use most of the account: the server allows 4 a minute,
    # far below what this pacer was told, and says so in X-RateLimit-Remaining.
    app, ocamba, pacer = simulated(clock, server_per_minute=4)
    items = [item(i, email=f"p{i}@example.com") for i in range(1, 7)]

    outcomes = await ocamba.deliver(items)

    sim = ocamba_sim(app)
    assert {o.state for o in outcomes} == {"confirmed"}
    assert sim.limiter.stats.throttled_window == 0
    assert sim.limiter.stats.max_admitted_minute_window == 4
    assert clock.now >= 3_060.0
    assert pacer.waited >= 59


async def test_simulator_throttling_never_leads_to_a_second_create() -> None:
    clock = FakeClock(start=3_000.0)
    app, ocamba, _ = simulated(clock)
    sim = ocamba_sim(app)
    sim.faults = Faults(throttle_rate=0.4, retry_after=2.0)
    profiles = {i: {"email": f"p{i}@example.com", "attributes": {"n": i}} for i in range(1, 9)}
    outcomes: dict[int, Outcome] = {}

    for _ in range(20):
        todo = [i for i in profiles if i not in outcomes or outcomes[i].state == "retry"]
        if not todo:
            break
        known = {i: outcomes[i].backend_id if i in outcomes else None for i in todo}
        for outcome in await ocamba.deliver([item(i, known[i], **profiles[i]) for i in todo]):
            outcomes[outcome.delivery_id] = outcome
        clock.now += 5

    assert 429 in sim.received.statuses()  # the fault did strike
    assert {o.state for o in outcomes.values()} == {"accepted"}
    assert sim.duplicate_creates == 0
    assert len(sim.profiles) == 8
    assert sorted(int(p.custom_properties["n"]["value"]) for p in sim.profiles.values()) == list(
        range(1, 9)
    )


async def test_simulator_refuses_an_unknown_id_and_only_that_item_fails() -> None:
    clock = FakeClock(start=3_000.0)
    app, ocamba, _ = simulated(clock)
    created = await ocamba.deliver([item(1, email="a@example.com"), item(2, email="b@example.com")])
    known = {o.delivery_id: o.backend_id for o in created}

    outcomes = by_id(
        await ocamba.deliver(
            [
                item(1, known[1], attributes={"x": 1}),
                item(2, "12345678901234567890", attributes={"x": 2}),
                item(3, known[2], attributes={"x": 3}),
            ]
        )
    )

    assert outcomes[1].state == outcomes[3].state == "accepted"
    assert outcomes[2].state == "failed"
    assert outcomes[2].error is not None
    assert "does not exist" in outcomes[2].error
    sim = ocamba_sim(app)
    assert sim.profiles[str(known[2])].custom_properties == {"x": {"type": "string", "value": "3"}}


async def test_two_writes_of_a_new_profile_in_one_batch_create_it_once() -> None:
    backend = FakeOcamba()
    outcomes = await adapter(backend).deliver(
        [
            item(1, external_id="crm-7", email="a@example.com", attributes={"x": 1, "y": 1}),
            item(2, external_id="crm-7", email="a@example.com", attributes={"x": 2}),
        ]
    )
    assert backend.paths() == [CREATE_PATH, IMPORT_PATH]
    # Ocamba refuses an id twice per import: one entry, the later write winning.
    assert backend.bodies(IMPORT_PATH) == [
        {
            "profiles": [
                {
                    "id": "9001",
                    "custom_properties": {
                        "x": {"type": "string", "value": "2"},
                        "y": {"type": "string", "value": "1"},
                    },
                }
            ]
        }
    ]
    assert [(o.state, o.backend_id) for o in outcomes] == [
        ("accepted", "9001"),
        ("accepted", "9001"),
    ]
