"""What the delivery benchmarks (parts 3-6) share: the backend simulators in their
own process, a backlog written straight into a store, the gateway's metrics and
its delivery table read from outside.

The simulators run as `gateway simulate` in a separate process so that neither
the gateway nor the load generator shares an interpreter (and a GIL) with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
from common import free_port, stop_process
from prometheus_client.parser import text_string_to_metric_families

from gateway.schema import Backend, NormalizedProfile
from gateway.simulators.runner import (
    DEFAULT_IMPORT_BATCH_DB_ID,
    DEFAULT_IMPORT_BATCH_TOKEN,
    DEFAULT_OCAMBA_TOKEN,
    DEFAULT_OMNEO_TOKEN,
)
from gateway.store.base import NewRequest
from gateway.store.sqlite import SQLiteStore

WEBHOOK_SECRET = "bench-webhook-secret"
# The PostgreSQL server on 127.0.0.1:5432 (trust auth); `test` exists and is
# used only to create and drop the benchmark's own databases.
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/"
# "Limits off" for Ocamba: far above anything one machine can send, in the
# simulator and in the gateway's own pacer alike.
NO_LIMIT = 1_000_000_000
ALL_TARGETS: tuple[Backend, ...] = ("ocamba", "omneo", "import_batch")
OPEN_STATES = ("pending", "retrying", "in_flight")

# `gateway simulate`, with TCP_NODELAY on the simulators' listening sockets.
# gateway/simulators/serving.py binds with socket.create_server, whose sockets
# carry proto 0, so asyncio never sets TCP_NODELAY on the accepted connections:
# Nagle and the client's delayed ACK then add ~40 ms to every answer (measured:
# 44 ms per GET /_sim/stats against 0.7 ms for the gateway's own /readyz). Real
# backends are not slow in that way, and a drain paced by it would measure the
# simulator. Accepted sockets inherit the option on Linux. Once serving.py sets
# it itself this wrapper changes nothing.
_LAUNCHER = """
import socket, sys
from gateway.simulators import serving
_bind = serving.bind
def bind(host, port):
    sock = _bind(host, port)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
serving.bind = bind
from gateway.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


class Simulators(msgspec.Struct, kw_only=True):
    ocamba_url: str
    omneo_url: str
    import_batch_url: str
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, backend: Backend) -> str:
        return {
            "ocamba": self.ocamba_url,
            "omneo": self.omneo_url,
            "import_batch": self.import_batch_url,
        }[backend]

    def gateway_env(self, *, ocamba_limits_off: bool = False) -> dict[str, str]:
        """The gateway variables that point it at these simulators (and turn its
        dispatcher on)."""
        env = {
            "GATEWAY_DISPATCHER_ENABLED": "true",
            "GATEWAY_OCAMBA_URL": self.ocamba_url,
            "GATEWAY_OCAMBA_TOKEN": DEFAULT_OCAMBA_TOKEN,
            # Omneo and import_batch serve their APIs under /api, as their docs show.
            "GATEWAY_OMNEO_URL": self.omneo_url + "/api",
            "GATEWAY_OMNEO_TOKEN": DEFAULT_OMNEO_TOKEN,
            "GATEWAY_OMNEO_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GATEWAY_IMPORT_BATCH_URL": self.import_batch_url + "/api",
            "GATEWAY_IMPORT_BATCH_TOKEN": DEFAULT_IMPORT_BATCH_TOKEN,
            "GATEWAY_IMPORT_BATCH_DB_ID": str(DEFAULT_IMPORT_BATCH_DB_ID),
        }
        if ocamba_limits_off:
            env["GATEWAY_OCAMBA_RATE_PER_SECOND"] = str(NO_LIMIT)
            env["GATEWAY_OCAMBA_RATE_PER_MINUTE"] = str(NO_LIMIT)
        return env

    def stats(self, backend: Backend) -> dict[str, Any]:
        r = httpx.get(f"{self.url(backend)}/_sim/stats", timeout=30)
        r.raise_for_status()
        stats: dict[str, Any] = r.json()
        return stats


@contextlib.contextmanager
def simulators(
    *,
    webhook_base_url: str | None = None,
    ocamba_per_second: int = 10,
    ocamba_per_minute: int = 150,
    ocamba_minute_window: float = 60.0,
    omneo_processing_delay: float = 0.05,
    nodelay: bool = True,
) -> Iterator[Simulators]:
    """`gateway simulate` on free ports. Ocamba's limits default to the documented
    ones; pass `NO_LIMIT` to switch them off. `nodelay`: see `_LAUNCHER`."""
    ports = {b: free_port() for b in ALL_TARGETS}
    launch = ["-c", _LAUNCHER] if nodelay else ["-m", "gateway"]
    args = [
        sys.executable,
        *launch,
        "simulate",
        "--ocamba-port",
        str(ports["ocamba"]),
        "--omneo-port",
        str(ports["omneo"]),
        "--import-batch-port",
        str(ports["import_batch"]),
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--ocamba-per-second",
        str(ocamba_per_second),
        "--ocamba-per-minute",
        str(ocamba_per_minute),
        "--ocamba-minute-window",
        str(ocamba_minute_window),
        "--omneo-processing-delay",
        str(omneo_processing_delay),
        # The fields `bench_profile` sends: the database has them, as a real one would.
        "--import-batch-fields",
        ",".join(BENCH_FIELDS),
    ]
    if webhook_base_url is not None:
        args += ["--webhook-base-url", webhook_base_url]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sims = Simulators(
        ocamba_url=f"http://127.0.0.1:{ports['ocamba']}",
        omneo_url=f"http://127.0.0.1:{ports['omneo']}",
        import_batch_url=f"http://127.0.0.1:{ports['import_batch']}",
        proc=proc,
    )
    try:
        deadline = time.monotonic() + 30
        for backend in ALL_TARGETS:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{sims.url(backend)}/_sim/stats", timeout=2).is_success:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the simulators did not start")
                time.sleep(0.05)
        yield sims
    finally:
        stop_process(proc)


BENCH_FIELDS = ("external_id", "tier", "visits")


def bench_profile(prefix: str, j: int) -> NormalizedProfile:
    """The profile `common.batch_body` posts, as the API stores it after validation."""
    return NormalizedProfile(
        external_id=f"{prefix}-{j}",
        email=f"{prefix}.{j}@example.com",
        phone="+442071838750",
        phone_country="GB",
        first_name="Ada",
        last_name="Lovelace",
        attributes={"tier": "gold", "visits": j},
    )


async def _fill(
    database: Path, profiles: int, prefix: str, targets: tuple[Backend, ...], per_request: int
) -> None:
    store = SQLiteStore(database)
    await store.open()
    try:
        requests = (profiles + per_request - 1) // per_request
        pending = list(range(requests))
        pending.reverse()

        async def writer() -> None:
            while pending:
                i = pending.pop()
                count = min(per_request, profiles - i * per_request)
                await store.accept(
                    NewRequest(
                        request_id=f"{prefix}-r{i}",
                        app="bench",
                        targets=list(targets),
                        profiles=[bench_profile(prefix, i * per_request + j) for j in range(count)],
                        received_at=time.time(),
                    )
                )

        # A few writers in flight let group commit put several requests in one commit.
        await asyncio.gather(*(writer() for _ in range(4)))
    finally:
        await store.close()


def fill_backlog(
    database: Path,
    profiles: int,
    *,
    prefix: str = "q",
    targets: tuple[Backend, ...] = ALL_TARGETS,
    per_request: int = 1000,
) -> float:
    """Queues `profiles` profiles (one delivery per target each) through the
    gateway's own store, as `POST /v1/profiles/batch` with the dispatcher off would
    leave them, without paying for HTTP: the parts using it measure the drain,
    not the accept path. Returns the seconds it took."""
    started = time.perf_counter()
    asyncio.run(_fill(database, profiles, prefix, targets, per_request))
    return time.perf_counter() - started


def read_only(database: Path) -> sqlite3.Connection:
    """A reader that cannot take the gateway's write lock by mistake."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def open_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Deliveries still to be sent, per backend (walks the partial index of open
    deliveries, so it gets cheaper as the queue drains), and under "unexpanded"
    those of accepted requests whose deliveries are not made yet: expand makes
    them at the dispatcher's claims, about 1,000 profiles at a time
    (gateway/store/expand.py), so an empty delivery queue is not a drained one."""
    rows = conn.execute(
        "SELECT backend, count(*) FROM deliveries"
        " WHERE state IN ('pending', 'retrying', 'in_flight') GROUP BY backend"
    ).fetchall()
    counts = {str(b): int(n) for b, n in rows}
    (unexpanded,) = conn.execute(
        "SELECT COALESCE(sum(r.profile_count * json_array_length(r.targets)), 0)"
        " FROM expand_queue q JOIN requests r ON r.id = q.request_id"
    ).fetchone()
    if unexpanded:
        counts["unexpanded"] = int(unexpanded)
    return counts


def awaiting_confirmation(conn: sqlite3.Connection) -> int:
    """Omneo deliveries accepted and not yet confirmed by a webhook."""
    row = conn.execute(
        "SELECT count(*) FROM deliveries WHERE backend = 'omneo' AND state = 'accepted'"
    ).fetchone()
    return int(row[0])


def state_counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute(
        "SELECT backend, state, count(*) FROM deliveries GROUP BY backend, state"
    ).fetchall()
    return {(str(b), str(s)): int(n) for b, s, n in rows}


def metrics(base_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the gateway's /metrics: (name, labels) -> value."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def backend_calls(base_url: str) -> dict[tuple[str, str, str], int]:
    """(backend, endpoint, status) -> HTTP calls the dispatcher made, from
    `gateway_backend_call_seconds`."""
    calls: dict[tuple[str, str, str], int] = {}
    for (name, labels), value in metrics(base_url).items():
        if name == "gateway_backend_call_seconds_count":
            d = dict(labels)
            calls[(d["backend"], d["endpoint"], d["status"])] = int(value)
    return calls


async def _postgres_admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_SERVER + "test")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_postgres(prefix: str) -> Iterator[str]:
    """An empty PostgreSQL database of its own, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_SERVER + name
    finally:
        asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
