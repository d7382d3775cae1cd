"""How replicas sharing one PostgreSQL find out about each other.

Wake-ups (`Listener`): accept() sends NOTIFY on `CHANNEL` with each target
backend's name in the transaction that stores the deliveries, so the
notification goes out if and only if they committed. One dedicated connection
per process LISTENs (a pooled connection would stop listening when it goes back
to the pool, whose reset runs UNLISTEN *) and wakes that backend's workers at
once instead of at their next poll. If the connection drops it is opened again;
notifications sent meanwhile are lost, so every backend is woken after a
reconnect, and the dispatcher's polling covers the gap.

Leadership (`Leadership`): Ocamba's limits (10/s, 150/min) are per account,
not per client. If every replica paced itself to the full limit, N replicas
would send N times too much and get throttled. So for each rate-limited backend
one replica is elected sender and paces to the whole limit; the others stand
by. The election is a session-level `pg_try_advisory_lock` taken on a
dedicated connection per backend: PostgreSQL holds it for exactly as long as
that session lives and releases it by itself when the session ends, however
it ends (clean close, crash, a killed host once TCP keepalive gives up, see
`postgres_db.KEEPALIVE`), so a dead leader never blocks the others for longer
than that. It must not be a pooled connection: the pool's reset on release
runs pg_advisory_unlock_all().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.schema import BACKENDS, Backend
from gateway.store.postgres.db import CHANNEL, DB_ERRORS, advisory_key, connect, store_errors
from gateway.worker import BackgroundWorker

log = logging.getLogger("gateway.store")

Wake = Callable[[Backend], None]

# Seconds between checks that an idle dedicated connection still answers; a
# connection that died without a word (a cut network) is noticed this late.
HEARTBEAT = 5.0
RECONNECT_MIN, RECONNECT_MAX = 0.1, 5.0


async def _alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1", timeout=HEARTBEAT)
    except DB_ERRORS:
        return False
    return True


async def _drop(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), HEARTBEAT)
    except BaseException:  # a failed or cancelled close still frees the session
        conn.terminate()
        raise


class Listener:
    """LISTENs on `CHANNEL` and calls every subscriber's wake with the backend.
    A background worker holds the connection and opens it again when it drops."""

    def __init__(self, dsn: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._dsn = dsn
        self._clock = clock
        self._wakes: list[Wake] = []
        self._conn: asyncpg.Connection | None = None
        self._delay = RECONNECT_MIN  # the next reconnect's backoff
        self.connects = 0  # how many times the connection was opened, for tests
        self.worker = BackgroundWorker(
            "pg-listener",
            self._step,
            interval=RECONNECT_MIN,
            clock=clock,
            logger=log,
            failure="LISTEN keeper failed",
        )

    async def subscribe(self, wake: Wake) -> None:
        """Returns once LISTEN is in place, so a commit after it wakes `wake`."""
        self._wakes.append(wake)
        if not self.worker.running:
            with store_errors("LISTEN"):
                self._conn = await self._listen()
            self.worker.start()

    async def close(self) -> None:
        await self.worker.stop()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(*DB_ERRORS):
                await _drop(conn)

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        for backend in BACKENDS:
            if payload == backend:
                self._wake_all([backend])

    def _wake_all(self, backends: list[Backend]) -> None:
        for wake in self._wakes:
            for backend in backends:
                try:
                    wake(backend)
                except Exception:
                    log.exception("wake-up callback failed")

    async def _listen(self) -> asyncpg.Connection:
        conn = await connect(self._dsn, "listener")
        try:
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            conn.terminate()
            raise
        self.connects += 1
        return conn

    async def _step(self) -> float:
        """Hold the connection until it drops (one step lasts that long); then
        open it again, backing off from RECONNECT_MIN to RECONNECT_MAX."""
        if self._conn is None:
            try:
                self._conn = await self._listen()
            except DB_ERRORS as exc:
                self._delay = min(self._delay * 2, RECONNECT_MAX)
                log.warning("LISTEN reconnect failed: %s", exc)
                return self._delay
            self._delay = RECONNECT_MIN
            self._wake_all(list(BACKENDS))  # what was notified meanwhile is lost
        await self._until_lost(self._conn)
        self._conn = None
        log.warning("LISTEN connection lost; reconnecting")
        return self._delay

    async def _until_lost(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        while not conn.is_closed():
            if await self._clock.wait(lost, HEARTBEAT):
                return
            if not await _alive(conn):
                conn.terminate()
                return


class Leadership:
    """One session-level advisory lock per backend, each on its own connection."""

    def __init__(self, dsn: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._dsn = dsn
        self._clock = clock
        self._conns: dict[Backend, asyncpg.Connection] = {}
        self._held: dict[Backend, float] = {}  # backend -> when the session last answered
        self._locks = {b: asyncio.Lock() for b in BACKENDS}

    async def lead(self, backend: Backend) -> bool:
        """True while this process holds `backend`'s lock. Called by every worker
        of the backend before each claim, so holding it costs no query, bar a
        heartbeat now and then. A lost session answers False once; the next
        call tries to win the lock again."""
        async with self._locks[backend]:
            conn = self._conns.get(backend)
            if conn is not None and conn.is_closed():
                self._forget(backend)
                return False
            if backend in self._held:
                return await self._still_held(backend)
            with store_errors("leader election"):
                if conn is None:
                    conn = self._conns[backend] = await connect(self._dsn, f"lead {backend}")
                won = await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)", advisory_key(f"lead:{backend}")
                )
            if won:
                self._held[backend] = self._clock.monotonic()
                log.info("leading %s", backend)
            # A loser keeps its connection, to try again cheaply next time.
            return bool(won)

    async def _still_held(self, backend: Backend) -> bool:
        if self._clock.monotonic() - self._held[backend] < HEARTBEAT:
            return True
        conn = self._conns[backend]
        if await _alive(conn):
            self._held[backend] = self._clock.monotonic()
            return True
        conn.terminate()  # the server ends the session, and so the lock, when it notices
        self._forget(backend)
        return False

    def _forget(self, backend: Backend) -> None:
        if self._held.pop(backend, None) is not None:
            log.warning("lost the lead of %s: its database session ended", backend)
        self._conns.pop(backend, None)

    async def close(self) -> None:
        """Closing the sessions releases their locks at once."""
        conns, self._conns = list(self._conns.values()), {}
        self._held.clear()
        for conn in conns:
            if not conn.is_closed():
                with contextlib.suppress(*DB_ERRORS):
                    await _drop(conn)
