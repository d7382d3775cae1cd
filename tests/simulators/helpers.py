"""Helpers for the simulator tests: an in-process client, a steppable clock,
and a webhook receiver (served for real by the `receiver` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

WAIT_SECONDS = 3.0


async def eventually(predicate: Callable[[], bool]) -> None:
    """Polls until `predicate` holds, failing the test after WAIT_SECONDS."""
    for _ in range(int(WAIT_SECONDS / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def asgi_client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


class FakeClock:
    """Wall-clock stand-in that only moves when a test moves it."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Hit(msgspec.Struct):
    path: str
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.raw)


class Receiver:
    """Stands in for the gateway's webhook endpoints; records what arrives and
    answers with the statuses queued in `fail_with` first, then 200."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.fail_with: list[int] = []
        self.url = ""
        self._arrived = asyncio.Event()

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            self.hits.append(
                Hit(request.url.path, dict(request.headers.items()), await request.body())
            )
            self._arrived.set()
            status = self.fail_with.pop(0) if self.fail_with else 200
            return Response(status_code=status)

        return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])

    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.hits) < count:
                self._arrived.clear()
                await self._arrived.wait()
