"""Helpers the adapter tests share: profiles, items, and a scripted backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from gateway.backends.base import Item
from gateway.backends.transport.pacing import Pacer, unlimited_pacer
from gateway.backends.transport.sender import HttpSender
from gateway.schema import NormalizedProfile

Reply = Callable[[httpx.Request], httpx.Response]


def profile(external_id: str = "crm-1", **fields: Any) -> NormalizedProfile:
    return msgspec.convert({"external_id": external_id, **fields}, NormalizedProfile)


def item(delivery_id: int, backend_id: str | None = None, **fields: Any) -> Item:
    fields.setdefault("external_id", f"crm-{delivery_id}")
    return Item(delivery_id, profile(**fields), backend_id)


class Backend:
    """A MockTransport that records every request and answers from `reply`."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply(request)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    def bodies(self, path: str | None = None) -> list[Any]:
        return [
            msgspec.json.decode(r.content)
            for r in self.requests
            if path is None or r.url.path == path
        ]

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def sender(
    name: str,
    client: httpx.AsyncClient,
    *,
    base_url: str = "http://backend.test",
    pacer: Pacer | None = None,
    headers: dict[str, str] | None = None,
) -> HttpSender:
    return HttpSender(
        name,
        client,
        base_url,
        pacer=pacer or unlimited_pacer(4),
        timeout=5.0,
        headers=headers,
    )
