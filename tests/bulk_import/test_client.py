"""Posting one chunk: retries under one key, 422s mapped back to rows, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest

from gateway.bulk_import.chunks import Chunk
from gateway.bulk_import.client import Abandoned, Fatal, Retry, Sender

Handler = Callable[[httpx.Request], httpx.Response]


def _chunk(n: int = 3) -> Chunk:
    chunk = Chunk(0, 10, 10 + n - 1, 10 + n, 999)
    for i in range(n):
        chunk.lines.append(10 + i)
        chunk.profiles.append(msgspec.json.encode({"external_id": f"e{i}"}))
        chunk.sources.append({"external_id": f"e{i}"})
    return chunk


def _ids(request: httpx.Request) -> list[str]:
    return [p["external_id"] for p in msgspec.json.decode(request.content)["profiles"]]


async def _send(
    handler: Handler, chunk: Chunk, *, stop: asyncio.Event | None = None, attempts: int = 5
) -> tuple[Any, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(base_url="http://gw", transport=transport) as http:
        sender = Sender(
            http,
            targets=None,
            stop=stop or asyncio.Event(),
            retry=Retry(attempts=attempts, base=0.01, cap=0.05),
            sleep=sleep,
        )
        return await sender.send(chunk, "key-1"), slept


@pytest.mark.anyio
async def test_throttling_and_outages_are_retried_under_the_same_key() -> None:
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.Response(503, json={"error": "store_unavailable", "message": "retry later"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 3:
            raise httpx.ConnectError("refused")
        if answers:
            return answers.pop(0)
        return httpx.Response(202, json={}, headers={"Idempotent-Replayed": "true"})

    outcome, slept = await _send(handler, _chunk())
    assert outcome.accepted == 3 and outcome.replayed and outcome.refused == {}
    assert {r.headers["idempotency-key"] for r in seen} == {"key-1"}
    assert len({r.content for r in seen}) == 1 and len(seen) == 4
    assert slept[0] >= 2  # Retry-After is a floor


@pytest.mark.anyio
async def test_a_422_sets_the_named_rows_aside_and_sends_the_rest() -> None:
    bodies: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(_ids(request))
        if len(bodies) == 1:
            errors = [
                {"path": "profiles[1].attributes", "message": "Ocamba accepts at most 100"},
                {"path": "profiles[2]", "message": "expected a profile object"},
            ]
            return httpx.Response(422, json={"error": "invalid", "message": "m", "errors": errors})
        return httpx.Response(202, json={})

    outcome, _ = await _send(handler, _chunk())
    assert bodies == [["e0", "e1", "e2"], ["e0"]]
    assert outcome.accepted == 1 and not outcome.replayed
    assert {i: [(e.path, e.message) for e in errs] for i, errs in outcome.refused.items()} == {
        1: [("attributes", "Ocamba accepts at most 100")],
        2: [("$", "expected a profile object")],
    }


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (401, {"error": "unauthorized", "message": "missing or wrong bearer token"}, "401"),
        (409, {"error": "idempotency_conflict", "message": "already used"}, "already used"),
        (
            422,
            {
                "error": "invalid",
                "message": "m",
                "errors": [{"path": "targets[0]", "message": "target 'x' is not configured"}],
            },
            "not configured",
        ),
    ],
)
@pytest.mark.anyio
async def test_refusals_that_would_hit_every_chunk_stop_the_import(
    status: int, body: dict[str, Any], words: str
) -> None:
    with pytest.raises(Fatal, match=words):
        await _send(lambda _: httpx.Response(status, json=body), _chunk())


@pytest.mark.anyio
async def test_it_gives_up_after_its_attempts_and_masks_echoed_values() -> None:
    body = {"error": "boom", "message": "down for jane@example.com"}
    with pytest.raises(Fatal, match=r"gave up after 3 attempts.*\[email\]"):
        await _send(lambda _: httpx.Response(502, json=body), _chunk(), attempts=3)


@pytest.mark.anyio
async def test_a_stop_abandons_a_chunk_waiting_to_be_retried() -> None:
    stop = asyncio.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        stop.set()
        return httpx.Response(503)

    with pytest.raises(Abandoned):
        await _send(handler, _chunk(), stop=stop)


@pytest.mark.anyio
async def test_the_apps_quota_is_waited_out_without_spending_attempts() -> None:
    seen: list[httpx.Request] = []
    over = {"error": "over_quota", "message": "app 'crm' is over its quota"}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) <= 12:
            return httpx.Response(429, json=over, headers={"Retry-After": "3"})
        return httpx.Response(202, json={})

    outcome, slept = await _send(handler, _chunk(), attempts=2)
    assert outcome.accepted == 3 and len(seen) == 13
    assert len(slept) == 12 and all(3 <= s <= 3.5 for s in slept)
    assert {r.headers["idempotency-key"] for r in seen} == {"key-1"}
