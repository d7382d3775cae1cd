"""A `gateway serve` on PostgreSQL whose database goes away under load.

The gateway reaches PostgreSQL through a TCP proxy of this test, so the
database can vanish the way it does in production: the network is cut (every
connection reset, new ones refused), or the server throws every session out
and refuses new ones (a failover, a restart: ALLOW_CONNECTIONS false plus
pg_terminate_backend). A client keeps writing throughout, each batch with its
own Idempotency-Key. During the outage every write must get 503, never 202;
once the database is back, retries of the refused writes (same key, same body)
get 202; and every external_id that ever got a 202 is stored, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.e2e.test_replicas import spawn, stop, wait_until_up
from tests.servers import free_base_port
from tests.store import pg
from tests.tokens import api_token, entry

TOKEN = api_token("outage")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PG_PORT = 5432
BATCH = 50


class Proxy:
    """127.0.0.1:<port> -> PostgreSQL, in a thread of its own; `cut` resets
    every connection and stops listening, `restore` listens again."""

    def __init__(self) -> None:
        self.port = free_base_port(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> Proxy:
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def restore(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

        self._call(listen())

    def cut(self) -> None:
        async def cut() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._open):
                writer.transport.abort()  # a reset, not a polite close
            self._open.clear()

        self._call(cut())

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", PG_PORT)
        except OSError:
            client_w.transport.abort()
            return
        self._open |= {client_w, server_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        self._open -= {client_w, server_w}


@dataclass
class Writer:
    """Posts batches of new profiles one after another from a thread; keeps
    every answer, and which batches got 202 and which 503."""

    gateway: str
    accepted: dict[str, list[str]] = field(default_factory=dict)  # key -> external_ids
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> body
    statuses: list[tuple[float, int]] = field(default_factory=list)  # (sent at, status)
    stopping: threading.Event = field(default_factory=threading.Event)
    n: int = 0

    def body(self) -> tuple[str, dict[str, Any]]:
        key = f"batch-{self.n}"
        ids = [f"u{self.n}-{j}" for j in range(BATCH)]
        self.n += 1
        profiles = [{"external_id": i, "email": f"{i}@example.com"} for i in ids]
        return key, {"profiles": profiles}

    def post(self, http: httpx.Client, key: str, body: dict[str, Any]) -> int:
        sent = time.monotonic()
        r = http.post(
            f"{self.gateway}/v1/profiles/batch", json=body, headers={"Idempotency-Key": key}
        )
        self.statuses.append((sent, r.status_code))
        if r.status_code == 202:
            self.accepted[key] = [p["external_id"] for p in body["profiles"]]
            self.refused.pop(key, None)
        elif r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            self.refused[key] = body
        else:
            raise AssertionError(f"{r.status_code}: {r.text}")
        return r.status_code

    def run(self) -> None:
        with httpx.Client(headers=AUTH, timeout=60) as http:
            while not self.stopping.is_set():
                self.post(http, *self.body())
                time.sleep(0.02)


@contextlib.contextmanager
def writing(gateway: str) -> Iterator[Writer]:
    writer = Writer(gateway)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            writer.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield writer
    finally:
        writer.stopping.set()
        thread.join(timeout=90)
    assert not errors, errors


def set_connections(database: str, allowed: bool) -> None:
    name = database.rsplit("/", 1)[1]
    flag = "true" if allowed else "false"
    pg.run(pg.execute(pg.ADMIN_DSN, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {flag}'))
    if not allowed:
        pg.run(
            pg.execute(
                pg.ADMIN_DSN,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                name,
            )
        )


def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def ready(gateway: str) -> int:
    return httpx.get(f"{gateway}/readyz", timeout=60).status_code


@pytest.mark.parametrize("outage", ["network_cut", "server_refuses"])
def test_writes_get_503_while_postgresql_is_gone_and_no_202_is_lost(
    tmp_path: Path, outage: Literal["network_cut", "server_refuses"]
) -> None:
    with pg.fresh_database("gw_outage") as database, Proxy() as proxy:
        via_proxy = database.replace(f":{PG_PORT}/", f":{proxy.port}/")
        port = free_base_port(1)
        gateway = f"http://127.0.0.1:{port}"
        env = {
            "GATEWAY_PORT": str(port),
            "GATEWAY_DATABASE_URL": via_proxy,
            "GATEWAY_API_TOKENS": entry("crm", TOKEN),
            "GATEWAY_OMNEO_URL": "http://127.0.0.1:9",
            "GATEWAY_OMNEO_TOKEN": "omneo-token",
            "GATEWAY_IMPORT_BATCH_URL": "http://127.0.0.1:9",
            "GATEWAY_IMPORT_BATCH_TOKEN": "import-batch-token",
            # The inbound API alone: nothing here is about sending.
            "GATEWAY_DISPATCHER_ENABLED": "false",
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
        proc = spawn(["serve"], env, tmp_path / "gateway.log")
        try:
            wait_until_up(f"{gateway}/readyz", proc)
            with writing(gateway) as w:
                wait_for(lambda: len(w.accepted) >= 5, 30, "no writes before the outage")
                if outage == "network_cut":
                    proxy.cut()
                else:
                    set_connections(database, allowed=False)
                down = time.monotonic()
                wait_for(lambda: ready(gateway) == 503, 30, "/readyz still 200 with no database")
                # Writes sent once the outage is in place must all be refused (the
                # margin: pg_terminate_backend does not wait for the sessions to end).
                wait_for(
                    lambda: sum(1 for at, _ in w.statuses if at > down + 0.5) >= 5,
                    60,
                    "too few writes during the outage",
                )
                during = [s for at, s in w.statuses if at > down + 0.5]
                if outage == "network_cut":
                    proxy.restore()
                else:
                    set_connections(database, allowed=True)
                up = time.monotonic()
                wait_for(lambda: ready(gateway) == 200, 30, "/readyz not 200 again")
                wait_for(
                    lambda: any(at > up and s == 202 for at, s in w.statuses),
                    30,
                    "writes not accepted again after the outage",
                )
            assert during and set(during) == {503}, during
            assert w.refused, "no write was refused"
            # The client retries what was refused, same key and body: 202 now.
            with httpx.Client(headers=AUTH, timeout=60) as http:
                for key, body in list(w.refused.items()):
                    assert w.post(http, key, body) == 202
            assert not w.refused
        finally:
            stop(proc)
        rows = pg.run(pg.execute(database, "SELECT external_id FROM profile_writes"))
        stored = [r["external_id"] for r in rows]
        wanted = [i for ids in w.accepted.values() for i in ids]
        # Every 202 is there, once; a write refused and retried is not doubled.
        assert sorted(stored) == sorted(wanted)
        print(
            f"\n{outage}: {len(during)} writes during the outage all 503;"
            f" {len(w.accepted)} batches accepted in all, {len(stored)} profiles stored"
        )
