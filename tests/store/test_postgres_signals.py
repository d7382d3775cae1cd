"""Replicas finding out about each other: LISTEN/NOTIFY wake-ups and the one
sender per rate-limited backend (session advisory locks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import NewRequest
from gateway.store.postgres import PostgresStore
from gateway.store.postgres.db import advisory_key
from tests.store import pg

pytestmark = pytest.mark.anyio

Replicas = tuple[PostgresStore, PostgresStore]


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "did not happen in time"
        await asyncio.sleep(0.02)


def request(rid: str, targets: list[Backend], *, key: str | None = None) -> NewRequest:
    return NewRequest(
        request_id=rid,
        app="crm",
        targets=targets,
        profiles=[NormalizedProfile(external_id="x")],
        received_at=time.time(),
        idempotency_key=key,
        body_hash="h" if key else None,
    )


class Woken:
    def __init__(self) -> None:
        self.backends: list[Backend] = []

    def __call__(self, backend: Backend) -> None:
        self.backends.append(backend)

    async def got(self, *backends: Backend) -> None:
        async def all_there() -> bool:
            return set(backends) <= set(self.backends)

        await eventually(all_there)


async def test_an_accept_on_one_replica_wakes_the_other(replicas: Replicas) -> None:
    a, b = replicas
    woken = Woken()
    await b.subscribe(woken)
    await a.accept(request("r1", ["omneo", "import_batch"], key="k"))
    await woken.got("omneo", "import_batch")
    assert "ocamba" not in woken.backends
    # A replay stores nothing, so it wakes nobody.
    woken.backends.clear()
    await a.accept(request("r2", ["ocamba"], key="k"))
    await asyncio.sleep(0.3)
    assert woken.backends == []


async def test_the_listener_comes_back_after_its_connection_drops(
    replicas: Replicas, pg_url: str
) -> None:
    a, b = replicas
    woken = Woken()
    await b.subscribe(woken)
    assert await pg.terminate_backends(pg_url, "application_name = 'gateway listener'") == 1

    async def reconnected() -> bool:
        return b.listener.connects == 2

    await eventually(reconnected)
    # Whatever was notified while it was away is lost: every backend is woken.
    await woken.got("ocamba", "omneo", "import_batch")
    woken.backends.clear()
    await a.accept(request("r1", ["ocamba"]))
    await woken.got("ocamba")


async def test_one_replica_leads_a_backend_until_it_closes(replicas: Replicas) -> None:
    a, b = replicas
    assert await a.lead("ocamba")
    assert not await b.lead("ocamba")
    assert await a.lead("ocamba")  # kept, not re-won
    assert await b.lead("import_batch")  # each backend has its own leader
    assert not await a.lead("import_batch")
    await a.close()

    async def b_leads() -> bool:
        return await b.lead("ocamba")

    await eventually(b_leads)


async def test_a_leader_whose_session_dies_stops_leading(replicas: Replicas, pg_url: str) -> None:
    a, b = replicas
    assert await a.lead("ocamba")
    holder = (
        "pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND ((classid::bigint << 32) | objid::bigint) = $1)"
    )
    assert await pg.terminate_backends(pg_url, holder, advisory_key("lead:ocamba")) == 1

    async def a_stopped() -> bool:
        return not await a.lead("ocamba")

    await eventually(a_stopped)
    assert await b.lead("ocamba")  # the server freed the lock with the session
    assert not await a.lead("ocamba")
