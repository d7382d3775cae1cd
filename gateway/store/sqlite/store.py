"""The embedded store: one SQLite file in WAL mode.

Writes go through a single writer thread that drains whatever is queued and
commits it as one transaction (group commit), so a burst of requests costs one
fsync rather than one each, and the event loop never waits on disk. Each queued
job runs inside its own SAVEPOINT, so one failing job (an idempotency conflict)
does not undo its neighbours. Reads run on a small thread pool with their own
connections; WAL lets them proceed while the writer commits.

What is written once for both engines (store/ops/, run by StoreCore through
`_plan`) has its queries in sqlite/queries/. What differs stays here and in
accept.py and queue.py (claim, record, replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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
from gateway.store.sqlite import accept
from gateway.store.sqlite import queue as dq
from gateway.store.sqlite.plans import run

T = TypeVar("T")
# A queued write: a function run in its own savepoint, or a request to accept,
# which is stored together with the other requests of the same commit.
Job = Callable[[sqlite3.Connection], Any] | NewRequest


def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit, so group commit controls them.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a 202 promises the write survives power loss, not only a crash.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    # Purged and erased payloads are overwritten with zeros in the file, not
    # only unlinked from the b-tree where a disk image would still show them.
    conn.execute("PRAGMA secure_delete=ON")
    return conn


def _owner_only(path: Path) -> None:
    """Create the database file readable by its owner only (it holds every
    write), and take group and other access away from one made before. SQLite
    gives the -wal and -shm files the database file's mode."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # Another user's file (a shared volume) is left as it is.
        with contextlib.suppress(PermissionError):
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if side.stat().st_mode & 0o077:
                side.chmod(0o600)


def _resolve(fut: asyncio.Future[Any], exc: BaseException | None, result: Any) -> None:
    if fut.done():  # the awaiting request was cancelled; the write stands anyway
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class _Writer:
    """The one thread that writes; see the module docstring."""

    def __init__(
        self, conn: sqlite3.Connection, max_batch: int, sealer: Sealer, clock: Clock
    ) -> None:
        self._conn = conn
        self._max_batch = max_batch
        self._sealer = sealer
        self._clock = clock
        self._queue: queue.SimpleQueue[
            tuple[Job, asyncio.Future[Any], asyncio.AbstractEventLoop] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self.commits = 0  # transactions committed, for tests and benchmarks

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def submit(self, job: Job) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((job, fut, loop))
        return fut

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            self._run_batch(batch)

    def _run_batch(
        self, batch: list[tuple[Job, asyncio.Future[Any], asyncio.AbstractEventLoop]]
    ) -> None:
        conn = self._conn
        results: list[tuple[asyncio.Future[Any], asyncio.AbstractEventLoop, Any, Any]] = []
        accepts = [(job, fut, loop) for job, fut, loop in batch if isinstance(job, NewRequest)]
        others = [(job, fut, loop) for job, fut, loop in batch if not isinstance(job, NewRequest)]
        try:
            conn.execute("BEGIN IMMEDIATE")
            if accepts:
                stored = accept.accept_many(
                    conn, [job for job, _, _ in accepts], self._sealer, self._clock
                )
                for (_, fut, loop), outcome in zip(accepts, stored, strict=True):
                    failed = isinstance(outcome, Exception)
                    results.append((fut, loop, outcome if failed else None, outcome))
            for job, fut, loop in others:
                conn.execute("SAVEPOINT job")
                try:
                    result = job(conn)
                except sqlite3.Error:
                    raise  # the transaction itself is in doubt: fail the whole batch
                except Exception as job_error:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((fut, loop, job_error, None))
                else:
                    conn.execute("RELEASE job")
                    results.append((fut, loop, None, result))
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            error = StoreError(f"store write failed: {exc}")
            results = [(fut, loop, error, None) for _, fut, loop in batch]
        for fut, loop, failure, result in results:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(_resolve, fut, failure, result)


class SQLiteStore(StoreCore):
    def __init__(
        self,
        path: Path | str,
        *,
        max_batch: int = 256,
        readers: int = 4,
        sealer: Sealer = PLAINTEXT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self._max_batch = max_batch
        self.sealer = sealer
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-read")
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writer: _Writer | None = None

    @classmethod
    def from_url(cls, url: str, *, max_batch: int = 256, sealer: Sealer = PLAINTEXT) -> SQLiteStore:
        prefix = "sqlite:///"
        if not url.startswith(prefix):
            raise ValueError(f"not an SQLite URL: {url!r}")
        return cls(url[len(prefix) :], max_batch=max_batch, sealer=sealer)

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        def setup() -> sqlite3.Connection:
            if self.path.parent:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            _owner_only(self.path)
            conn = connect(self.path)
            try:
                migrations.apply_sqlite(conn)
                conn.execute("BEGIN IMMEDIATE")
                run(conn, keys.register_keys(self.sealer))
                conn.execute("COMMIT")
            except BaseException:
                conn.close()
                raise
            return conn

        conn = await asyncio.to_thread(setup)
        self._writer = _Writer(conn, self._max_batch, self.sealer, self.clock)
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.to_thread(writer.stop)
            writer._conn.close()
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()

    @property
    def commits(self) -> int:
        return self._writer.commits if self._writer else 0

    # -- plumbing ----------------------------------------------------------

    async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StoreError("store is not open")
        result: T = await self._writer.submit(job)
        return result

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._read_conns.append(conn)
        return conn

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, lambda: query(self._reader()))
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    async def _plan(self, what: str, plan: Plan[T], access: Access) -> T:
        # One writer serialises every write, so "write" and "transaction" are
        # alike: a job of the writer thread, in its own savepoint. Readers
        # see the last commit.
        if access in ("write", "transaction"):
            return await self._write(lambda conn: run(conn, plan))
        return await self._read(lambda conn: run(conn, plan))

    # -- inbound -----------------------------------------------------------

    async def accept(self, request: NewRequest) -> AcceptResult:
        if self._writer is None:
            raise StoreError("store is not open")
        result: AcceptResult = await self._writer.submit(request)
        return result

    # -- the dispatcher's queue (see sqlite/queue.py) ------------------------

    async def claim(
        self,
        backend: Backend,
        limit: int,
        owner: str,
        lease_seconds: float,
        lanes: Sequence[Lane] = LANES,
        settle: float = 0.0,
    ) -> list[Claim]:
        return await self._write(
            lambda conn: dq.claim(
                conn, backend, limit, owner, lease_seconds, self.sealer, self.clock, lanes, settle
            )
        )

    async def record(self, owner: str, results: list[DeliveryResult]) -> int:
        return await self._write(
            lambda conn: dq.record(conn, owner, results, self.sealer, self.clock)
        )

    async def replay(
        self,
        states: list[DeliveryState],
        *,
        delivery_id: int | None = None,
        backend: Backend | None = None,
    ) -> ReplayResult:
        return await self._write(
            lambda conn: dq.replay(conn, states, delivery_id, backend, self.clock)
        )

    # -- several processes -----------------------------------------------------

    async def subscribe(self, wake: Callable[[Backend], None]) -> None:
        # Processes sharing one SQLite file (`--workers N`) find each other's
        # work by polling; there is no cross-process signal to listen to.
        return None

    async def lead(self, backend: Backend) -> bool:
        # Each process paces on its own and learns of the others through the
        # backend's X-RateLimit-Remaining; global limits need PostgreSQL.
        return True

    async def _payloads_removed(self) -> None:
        await self._checkpoint()

    async def _checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it, so the page
        images of removed payloads do not wait in the WAL for reuse. Best
        effort: a reader in the middle of a transaction keeps it for now."""

        def run() -> None:
            conn = connect(self.path)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.close()

        try:
            await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise StoreError(f"checkpoint failed: {exc}") from exc
