"""Replicas finding out about each other: LISTEN/NOTIFY wake-ups and the one
sender per rate-limited backend (session advisory locks)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import pytest

from gateway.clock import FakeClock
from gateway.schema import BACKENDS, Backend, NormalizedProfile
from gateway.store.base import NewRequest
from gateway.store.postgres import PostgresStore, signals
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
    # A replay stores nothing, so it wakes nobody. NOTIFYs arrive in commit
    # order, so once a later write's wake-up is in, the replay's would be too.
    woken.backends.clear()
    await a.accept(request("r2", ["ocamba"], key="k"))
    await a.accept(request("r3", ["omneo"]))
    await woken.got("omneo")
    assert woken.backends == ["omneo"]


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


# -- the listener's keeper on a clock stepped by hand (no database) ---------------


class FakeConnection:
    """Just what the keeper uses of an asyncpg connection."""

    def __init__(self) -> None:
        self.closed = False
        self.answers = True  # whether `SELECT 1` (the heartbeat) answers
        self.heartbeats = 0
        self._on_lost: list[Callable[[object], None]] = []

    def add_termination_listener(self, callback: Callable[[object], None]) -> None:
        self._on_lost.append(callback)

    def is_closed(self) -> bool:
        return self.closed

    async def fetchval(self, query: str, **options: float) -> int:
        self.heartbeats += 1
        if not self.answers:
            raise ConnectionResetError("no answer")
        return 1

    def terminate(self) -> None:
        self.closed = True
        for callback in self._on_lost:
            callback(self)

    async def close(self) -> None:
        self.closed = True


class FlakyListen:
    """Stands in for Listener._listen: fails `failures` times, then connects."""

    def __init__(self) -> None:
        self.failures = 0
        self.conns: list[FakeConnection] = []
        self.tried_at: list[float] = []
        self.clock: FakeClock | None = None

    async def __call__(self) -> FakeConnection:
        assert self.clock is not None
        self.tried_at.append(self.clock.now())
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("database down")
        self.conns.append(FakeConnection())
        return self.conns[-1]


async def test_the_listener_reconnects_with_backoff_and_then_wakes_everyone() -> None:
    clock, listen = FakeClock(0.0), FlakyListen()
    listen.clock = clock
    listener = signals.Listener("postgresql://unused", clock=clock)
    listener._listen = listen  # type: ignore[assignment, method-assign]
    woken = Woken()
    await listener.subscribe(woken)
    idle = listener.worker.idle
    try:
        await asyncio.wait_for(clock.blocked(1), 5)  # holding the connection
        clock.advance(signals.HEARTBEAT)  # an idle connection is checked now and then
        await asyncio.wait_for(clock.blocked(1), 5)
        assert listen.conns[0].heartbeats == 1 and woken.backends == []

        listen.failures = 7
        listen.tried_at.clear()
        listen.conns[0].terminate()  # the connection drops
        await asyncio.wait_for(idle(), 5)
        while listen.failures:  # each failed try doubles the wait, up to RECONNECT_MAX
            clock.advance((clock.next_deadline() or 0.0) - clock.now())
            await asyncio.wait_for(idle(), 5)
        tried = listen.tried_at
        assert tried[0] == signals.HEARTBEAT + signals.RECONNECT_MIN
        waits = [b - a for a, b in itertools.pairwise(tried)]
        assert waits == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0])
        assert woken.backends == []
        clock.advance(signals.RECONNECT_MAX)  # the eighth try connects
        await asyncio.wait_for(clock.blocked(1), 5)
        assert len(listen.conns) == 2
        assert sorted(woken.backends) == sorted(BACKENDS)  # what was missed is unknown

        listen.conns[1].answers = False  # a cut network: no word, no answer
        clock.advance(signals.HEARTBEAT)
        await asyncio.wait_for(idle(), 5)
        assert listen.conns[1].closed
        clock.advance(signals.RECONNECT_MIN)  # the backoff started again from the least
        await asyncio.wait_for(clock.blocked(1), 5)
        assert len(listen.conns) == 3
    finally:
        await listener.close()
    assert listen.conns[2].closed and not listener.worker.running
