"""gateway.client against httpx.MockTransport: what it sends, when it sends it
again, and what it raises. Waits go to a list, never to the clock."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import msgspec
import pytest

from gateway.client import (
    Accepted,
    AsyncGatewayClient,
    GatewayClient,
    GatewayError,
    NormalizedProfile,
    PartialWriteError,
    Profile,
    ProfileSummary,
    ProfileView,
    RetryPolicy,
)

BASE = "http://gateway.test"
TOKEN = "crm-token-0123456789abcdef0123456789abcdef"
Handler = Callable[[httpx.Request], httpx.Response]
# No jitter: backoff is exactly base * 2**n.
POLICY = RetryPolicy(attempts=4, base=0.5, cap=4.0, jitter=lambda: 1.0)


def accepted(request: httpx.Request, request_id: str = "req-1") -> httpx.Response:
    body = json.loads(request.content)
    count = len(body["profiles"]) if "profiles" in body else 1
    return httpx.Response(
        202, json={"request_id": request_id, "profiles": count, "targets": ["ocamba"]}
    )


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": code}, headers=headers)


class Script:
    """Answers requests in turn from `steps` (a response maker, or an exception
    to raise as the transport would), recording each request."""

    def __init__(self, *steps: Handler | Exception) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step(request)

    @property
    def keys(self) -> list[str | None]:
        return [r.headers.get("idempotency-key") for r in self.requests]


@pytest.fixture
def waits() -> list[float]:
    return []


def client_for(script: Script, waits: list[float], policy: RetryPolicy = POLICY) -> GatewayClient:
    return GatewayClient(
        BASE, TOKEN, transport=httpx.MockTransport(script), retry=policy, sleep=waits.append
    )


@pytest.fixture
def jane() -> Iterator[Profile]:
    yield Profile(external_id="cust-42", email="jane@example.com")


def test_a_write_is_retried_on_503_and_429_with_one_key_and_retry_after(
    waits: list[float], jane: Profile
) -> None:
    script = Script(
        lambda r: error(503, "store_unavailable"),
        lambda r: error(429, "slow_down", {"Retry-After": "7"}),
        accepted,
    )
    with client_for(script, waits) as gw:
        answer = gw.write(jane, targets=["ocamba"])
    assert answer == Accepted(request_id="req-1", profiles=1, targets=["ocamba"])
    assert waits == [0.5, 7.0]  # backoff for the first; the server's word for the second
    keys = script.keys
    assert len(keys) == 3 and keys[0] and len(set(keys)) == 1
    sent = [json.loads(r.content) for r in script.requests]
    body = {"external_id": "cust-42", "email": "jane@example.com", "targets": ["ocamba"]}
    assert sent == [body] * 3
    first = script.requests[0]
    assert first.url == f"{BASE}/v1/profiles" and first.method == "POST"
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["content-type"] == "application/json"


def test_each_call_has_its_own_key_unless_given_one(waits: list[float], jane: Profile) -> None:
    script = Script(accepted)
    with client_for(script, waits) as gw:
        gw.write(jane)
        gw.write(jane)
        gw.write(jane, idempotency_key="order-77")
    assert len(set(script.keys)) == 3 and script.keys[2] == "order-77"


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("gone")],
    ids=["read timeout", "connect error", "connection dropped"],
)
def test_transport_failures_are_retried_with_the_same_key(
    waits: list[float], jane: Profile, failure: Exception
) -> None:
    script = Script(failure, failure, accepted)
    with client_for(script, waits) as gw:
        assert gw.write(jane).request_id == "req-1"
    assert waits == [0.5, 1.0]
    assert len(script.requests) == 3 and len(set(script.keys)) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "bad_json"), (401, "unauthorized"), (409, "idempotency_conflict"), (422, "invalid")],
)
def test_other_refusals_are_raised_at_once(
    waits: list[float], jane: Profile, status: int, code: str
) -> None:
    script = Script(lambda r: error(status, code))
    with client_for(script, waits) as gw, pytest.raises(GatewayError) as raised:
        gw.write(jane)
    assert len(script.requests) == 1 and waits == []
    assert raised.value.status == status and raised.value.error == code
    assert raised.value.body is not None and raised.value.body.message == code


def test_spent_retries_raise_the_last_answer(waits: list[float], jane: Profile) -> None:
    script = Script(lambda r: error(503, "store_unavailable", {"Retry-After": "1"}))
    with client_for(script, waits) as gw, pytest.raises(GatewayError) as raised:
        gw.write(jane)
    assert len(script.requests) == POLICY.attempts
    assert raised.value.status == 503 and raised.value.attempts == POLICY.attempts
    assert waits == [1.0, 1.0, 1.0]


def test_spent_retries_after_timeouts_raise_with_the_cause(
    waits: list[float], jane: Profile
) -> None:
    script = Script(httpx.ConnectTimeout("no route"))
    with client_for(script, waits) as gw, pytest.raises(GatewayError) as raised:
        gw.write(jane)
    assert raised.value.status is None and raised.value.attempts == 4
    assert isinstance(raised.value.__cause__, httpx.ConnectTimeout)
    assert waits == [0.5, 1.0, 2.0]


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(base=1.0, cap=5.0, jitter=lambda: 0.0)
    assert [policy.backoff(n) for n in range(5)] == [0.5, 1.0, 2.0, 2.5, 2.5]


def test_retry_after_as_a_date_and_out_of_range() -> None:
    now = 1_800_000_000.0
    policy = RetryPolicy(max_retry_after=60.0, clock=lambda: now)
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert policy.retry_after(date) == 30.0
    assert policy.retry_after("3600") == 60.0
    assert policy.retry_after("-1") == 0.0
    assert policy.retry_after("soon") is None
    assert policy.retry_after("nan") is None


def test_write_many_splits_2500_into_1000_1000_500(waits: list[float]) -> None:
    ids = iter(["req-a", "req-b", "req-c"])
    script = Script(lambda r: accepted(r, next(ids)))
    people = [Profile(external_id=f"c{i}") for i in range(2500)]
    with client_for(script, waits) as gw:
        answers = gw.write_many(people, targets=["omneo"])
    assert [a.profiles for a in answers] == [1000, 1000, 500]
    assert [a.request_id for a in answers] == ["req-a", "req-b", "req-c"]
    bodies = [json.loads(r.content) for r in script.requests]
    assert [b["profiles"][0]["external_id"] for b in bodies] == ["c0", "c1000", "c2000"]
    assert all(b["targets"] == ["omneo"] for b in bodies)
    assert {r.url.path for r in script.requests} == {"/v1/profiles/batch"}
    assert len(set(script.keys)) == 3  # a key per batch: each is its own write


def test_write_many_keys_derive_from_a_given_key(waits: list[float]) -> None:
    script = Script(accepted)
    with client_for(script, waits) as gw:
        gw.batch_size = 2
        gw.write_many([Profile(external_id=f"c{i}") for i in range(5)], idempotency_key="imp-9")
    assert script.keys == ["imp-9-0", "imp-9-1", "imp-9-2"]


def test_write_many_says_which_batches_were_accepted(waits: list[float]) -> None:
    script = Script(accepted, lambda r: error(422, "invalid"))
    people = [Profile(external_id=f"c{i}") for i in range(1500)]
    with client_for(script, waits) as gw, pytest.raises(PartialWriteError) as raised:
        gw.write_many(people)
    assert raised.value.failed_batch == 1 and raised.value.status == 422
    assert [a.profiles for a in raised.value.accepted] == [1000]


def test_mappings_are_checked_before_anything_is_sent(waits: list[float]) -> None:
    script = Script(accepted)
    with client_for(script, waits) as gw:
        with pytest.raises(msgspec.ValidationError):
            gw.write({"external_id": "x", "gender": "robot"})
        gw.write({"external_id": "x", "birth_date": "1990-02-28"})
    assert len(script.requests) == 1
    assert json.loads(script.requests[0].content)["birth_date"] == "1990-02-28"


def test_a_normalized_profile_is_sent_without_derived_fields(waits: list[float]) -> None:
    script = Script(accepted)
    with client_for(script, waits) as gw:
        gw.write(NormalizedProfile(external_id="x", phone="+4930123456", phone_country="DE"))
    assert json.loads(script.requests[0].content) == {"external_id": "x", "phone": "+4930123456"}


def test_status_calls_decode_into_the_gateways_structs(waits: list[float]) -> None:
    delivery = {
        "backend": "ocamba",
        "state": "pending",
        "attempts": 0,
        "last_error": None,
        "updated_at": 1.0,
    }
    full = {
        "external_id": "a/b",
        "last_request_id": "r1",
        "updated_at": 1.0,
        "profile": {"external_id": "a/b"},
        "backends": {"ocamba": delivery},
        "backend_ids": {},
    }
    summary = {
        "external_id": "a/b",
        "last_request_id": "r1",
        "updated_at": 1.0,
        "fields": ["email"],
        "backends": [],
    }
    request = {
        "request_id": "r1",
        "app": "crm",
        "received_at": 1.0,
        "targets": ["ocamba"],
        "profiles": [{"external_id": "a/b", "position": 0, "deliveries": [delivery]}],
    }
    answers = iter([full, summary, request])
    script = Script(lambda r: httpx.Response(200, json=next(answers)))
    with client_for(script, waits) as gw:
        assert isinstance(gw.profile_status("a/b"), ProfileView)
        assert isinstance(gw.profile_status("a/b"), ProfileSummary)
        view = gw.request_status("r1")
    assert view.profiles[0].deliveries[0].state == "pending"
    assert [r.url.raw_path for r in script.requests] == [
        b"/v1/profiles/a%2Fb",
        b"/v1/profiles/a%2Fb",
        b"/v1/requests/r1",
    ]
    assert all("idempotency-key" not in r.headers for r in script.requests)


def test_a_404_on_a_status_call_is_raised(waits: list[float]) -> None:
    script = Script(lambda r: error(404, "not_found"))
    with client_for(script, waits) as gw, pytest.raises(GatewayError) as raised:
        gw.request_status("nope")
    assert raised.value.status == 404 and len(script.requests) == 1


@pytest.mark.anyio
async def test_the_async_client_retries_and_splits_alike(jane: Profile) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    script = Script(
        httpx.ReadTimeout("slow"),
        lambda r: error(429, "slow_down", {"Retry-After": "3"}),
        accepted,
    )
    async with AsyncGatewayClient(
        BASE, TOKEN, transport=httpx.MockTransport(script), retry=POLICY, sleep=sleep
    ) as gw:
        assert (await gw.write(jane)).request_id == "req-1"
        assert waits == [0.5, 3.0] and len(set(script.keys)) == 1
        script.requests.clear()
        answers = await gw.write_many([Profile(external_id=f"c{i}") for i in range(2500)])
    assert [a.profiles for a in answers] == [1000, 1000, 500]
    assert len(set(script.keys)) == 3


def test_the_two_clients_offer_the_same_calls() -> None:
    """The async client mirrors the sync one call for call (only I/O differs)."""

    def calls(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_") and name not in ("close", "aclose")
        }

    assert calls(GatewayClient) == calls(AsyncGatewayClient)
    assert set(calls(GatewayClient)) == {
        "send",
        "write",
        "write_many",
        "request_status",
        "profile_status",
    }


def test_priority_and_resend_are_sent_only_when_asked_for(
    waits: list[float], jane: Profile
) -> None:
    script = Script(accepted)
    with client_for(script, waits) as gw:
        gw.write(jane)
        gw.write(jane, priority="bulk", resend=True)
        gw.write_many([jane], priority="realtime")
        gw.write_many([jane], resend=True)
    bodies = [json.loads(r.content) for r in script.requests]
    # Left at their defaults they are not sent: a body, and what its key covers, stays as it was.
    assert "priority" not in bodies[0] and "resend" not in bodies[0]
    assert (bodies[1]["priority"], bodies[1]["resend"]) == ("bulk", True)
    assert bodies[2]["priority"] == "realtime" and "resend" not in bodies[2]
    assert bodies[3]["resend"] is True and "priority" not in bodies[3]


def test_the_accepted_answer_says_the_lane(waits: list[float], jane: Profile) -> None:
    def bulk(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            202, json={"request_id": "r", "profiles": 1, "targets": [], "lane": "bulk"}
        )

    with client_for(Script(bulk), waits) as gw:
        assert gw.write(jane, priority="bulk").lane == "bulk"
    # An older gateway's answer has no lane: realtime is what it did.
    with client_for(Script(accepted), waits) as gw:
        assert gw.write(jane).lane == "realtime"
