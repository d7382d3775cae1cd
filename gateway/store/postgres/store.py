"""The shared store: PostgreSQL, for several gateway replicas on one database.

Each call runs on a connection from an asyncpg pool, in one transaction where
it writes; concurrency between replicas is settled by the database's own locks
(see postgres_accept for the write path, postgres_queue for the claim). Two
kinds of work need a connection of their own, outside the pool: listening for
other replicas' writes and holding a backend's sender lock (postgres_signals).

What is written once for both engines (store/ops/, run by StoreCore through
`_plan`) has its queries in postgres/queries/. What differs stays here:
db (errors, lock keys), plans (the asyncpg runner), accept, queue (claim,
record, replay), signals; the schema is in postgres/migrations/ and applied by
migrations.apply_postgres.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, TypeVar

import asyncpg

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.crypto import PLAINTEXT, Sealer
from gateway.schema import LANES, Backend, Lane
from gateway.store import migrations
from gateway.store.base import (
    AcceptResult,
    Claim,
    DeliveryResult,
    DeliveryState,
    NewRequest,
    ReplayResult,
    StoreError,
)
from gateway.store.core import Access, StoreCore
from gateway.store.ops import keys
from gateway.store.plans import Plan
from gateway.store.postgres import accept, queue
from gateway.store.postgres.db import Conn, store_errors
from gateway.store.postgres.plans import run
from gateway.store.postgres.signals import Leadership, Listener, Wake

T = TypeVar("T")
Work = Callable[[Conn], Awaitable[T]]
# How a unit of work runs: "statement" for one statement (atomic on its own, so
# no BEGIN/COMMIT round trips), "write" for several in one transaction,
# "snapshot" for several reads that must agree with each other.
Mode = Literal["statement", "write", "snapshot"]

_MODES: dict[Access, Mode] = {
    "read": "statement",
    "snapshot": "snapshot",
    "write": "statement",
    "transaction": "write",
}

URL_PREFIXES = ("postgresql://", "postgres://")


class PostgresStore(StoreCore):
    def __init__(
        self,
        dsn: str,
        *,
        migrate: bool = True,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        sealer: Sealer = PLAINTEXT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """`migrate`: apply pending migrations in open(); when False, open()
        refuses a schema that is behind (`gateway migrate` applies it)."""
        self.dsn = dsn
        self.sealer = sealer
        self.clock = clock
        self._migrate = migrate
        self._min_size, self._max_size = min_size, max_size
        self._timeout = timeout  # for a pooled connection and for each statement
        self._pool: asyncpg.Pool | None = None
        self.listener = Listener(dsn)
        self.leadership = Leadership(dsn)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        migrate: bool = True,
        pool_size: int = 10,
        sealer: Sealer = PLAINTEXT,
    ) -> PostgresStore:
        if not url.startswith(URL_PREFIXES):
            raise ValueError(f"not a PostgreSQL URL: {url!r}")
        return cls(url, migrate=migrate, max_size=pool_size, sealer=sealer)

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        with store_errors("connecting to PostgreSQL"):
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                command_timeout=self._timeout,
                server_settings={"application_name": "gateway"},
            )
        try:
            async with pool.acquire(timeout=self._timeout) as conn:
                with store_errors("migrating the schema"):
                    if self._migrate:
                        await migrations.apply_postgres(conn)
                        missing = []
                    else:
                        missing = await migrations.pending_postgres(conn)
                if missing:
                    raise migrations.SchemaBehind(missing)
                with store_errors("checking the encryption keys"):
                    async with conn.transaction():
                        await run(conn, keys.register_keys(self.sealer))
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool

    async def close(self) -> None:
        await self.listener.close()
        await self.leadership.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except TimeoutError:
                pool.terminate()

    # -- plumbing ----------------------------------------------------------

    async def _run(self, what: str, work: Work[T], mode: Mode = "statement") -> T:
        """`work` on a pooled connection; see `Mode`."""
        if self._pool is None:
            raise StoreError("store is not open")
        with store_errors(what):
            async with self._pool.acquire(timeout=self._timeout) as conn:
                if mode == "statement":
                    return await work(conn)
                if mode == "write":
                    async with conn.transaction():
                        return await work(conn)
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    return await work(conn)

    async def _plan(self, what: str, plan: Plan[T], access: Access) -> T:
        return await self._run(what, lambda conn: run(conn, plan), _MODES[access])

    async def _payloads_removed(self) -> None:
        # The old row versions are reclaimed by (auto)vacuum; with a key
        # configured they hold ciphertext only.
        return None

    # -- inbound -----------------------------------------------------------

    async def accept(self, request: NewRequest) -> AcceptResult:
        # postgres_accept opens its own transaction: a replay must not commit.
        if self._pool is None:
            raise StoreError("store is not open")
        with store_errors("store write"):
            async with self._pool.acquire(timeout=self._timeout) as conn:
                return await accept.accept(conn, request, self.sealer, self.clock)

    # -- the dispatcher's queue (see postgres/queue.py) ----------------------

    async def claim(
        self,
        backend: Backend,
        limit: int,
        owner: str,
        lease_seconds: float,
        lanes: Sequence[Lane] = LANES,
        settle: float = 0.0,
    ) -> list[Claim]:
        return await self._run(
            "claim",
            lambda conn: queue.claim(
                conn, backend, limit, owner, lease_seconds, self.sealer, self.clock, lanes, settle
            ),
        )

    async def record(self, owner: str, results: list[DeliveryResult]) -> int:
        return await self._run(
            "record", lambda conn: queue.record(conn, owner, results, self.sealer, self.clock)
        )

    async def replay(
        self,
        states: list[DeliveryState],
        *,
        delivery_id: int | None = None,
        backend: Backend | None = None,
    ) -> ReplayResult:
        return await self._run(
            "replay", lambda conn: queue.replay(conn, states, delivery_id, backend, self.clock)
        )

    # -- several replicas (see postgres_signals) ---------------------------------

    async def subscribe(self, wake: Wake) -> None:
        await self.listener.subscribe(wake)

    async def lead(self, backend: Backend) -> bool:
        return await self.leadership.lead(backend)
