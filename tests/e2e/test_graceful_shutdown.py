"""SIGTERM drains `gateway serve`: /readyz fails at once, writes are still taken
for GATEWAY_SHUTDOWN_DELAY, the process exits in bounded time, nothing is lost.

Real processes: `gateway simulate` and `gateway serve`, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.serving import DrainingServer
from tests.servers import free_base_port, free_port
from tests.tokens import api_token, entry

TOKEN = api_token("drain")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "drain-webhook-secret"
DELAY, GRACE = 1.5, 1.0
# Past delay + grace: uvicorn's request drain, closing the store, interpreter exit,
# on a busy two-core machine.
MARGIN = 3.0
DELIVERED = {"accepted", "confirmed"}


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn(args, env, log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not come up:\n{log.read_text(errors='replace')}")


def simulator_env(log: Path) -> dict[str, str]:
    """The GATEWAY_* variables `gateway simulate` printed."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = log.read_text(errors="replace").splitlines()
        env = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in lines
            if line.strip().startswith("export GATEWAY_")
        )
        if "GATEWAY_IMPORT_BATCH_DB_ID" in env:
            return env
        time.sleep(0.05)
    raise AssertionError(log.read_text(errors="replace"))


def gateway_env(db: Path, **extra: str) -> dict[str, str]:
    return {
        "GATEWAY_API_TOKENS": entry("crm", TOKEN),
        "GATEWAY_DATABASE_URL": f"sqlite:///{db}",
        "GATEWAY_SHUTDOWN_DELAY": str(DELAY),
        "GATEWAY_SHUTDOWN_GRACE": str(GRACE),
        "GATEWAY_BATCH_LINGER": "0.05",
        "GATEWAY_RETRY_BASE": "0.05",
        "GATEWAY_RETRY_CAP": "0.3",
        "GATEWAY_BACKEND_TIMEOUT": "10",
        **extra,
    }


def log_messages(log: Path) -> list[str]:
    messages = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "msg" in entry:
            messages.append(str(entry["msg"]))
    return messages


@dataclass
class Answer:
    external_id: str
    sent: float  # time.monotonic()
    status: int | None  # None: no HTTP answer (connection refused or cut)


@dataclass
class Writer:
    """Posts one profile every few milliseconds until stopped."""

    base: str
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.base, headers=AUTH, timeout=10) as http:
            i = 0
            while not self.stop.is_set():
                external_id = f"w-{i}"
                sent = time.monotonic()
                try:
                    r = http.post(
                        "/v1/profiles",
                        json={"external_id": external_id, "email": f"w{i}@example.com"},
                    )
                    status: int | None = r.status_code
                except httpx.TransportError:
                    status = None
                self.answers.append(Answer(external_id, sent, status))
                i += 1
                time.sleep(0.02)

    def accepted(self) -> set[str]:
        return {a.external_id for a in self.answers if a.status == 202}


@contextmanager
def writing(base: str) -> Iterator[Writer]:
    writer = Writer(base)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        yield writer
    finally:
        writer.stop.set()
        thread.join(timeout=15)


def wait_readyz_draining(url: str, since: float) -> float:
    """Seconds from `since` until /readyz answers 503 draining."""
    while time.monotonic() - since < 5:
        try:
            r = httpx.get(f"{url}/readyz", timeout=1)
        except httpx.TransportError:
            r = None
        if r is not None and r.status_code == 503:
            assert r.json() == {"status": "draining"}
            return time.monotonic() - since
        time.sleep(0.02)
    raise AssertionError("/readyz never answered 503")


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def open_deliveries(db: Path, accepted: set[str]) -> list[tuple[str, str, str]]:
    """(external_id, backend, state) of every accepted write not yet delivered."""
    found = rows(db, "SELECT external_id, backend, state FROM deliveries")
    return [(e, b, s) for e, b, s in found if e in accepted and s not in DELIVERED]


def test_sigterm_drains_loses_nothing_and_a_restart_delivers_everything(
    tmp_path: Path,
) -> None:
    sim_base, port = free_base_port(3), free_port()
    url = f"http://127.0.0.1:{port}"
    db, sim_log, gw_log = tmp_path / "gateway.db", tmp_path / "sim.log", tmp_path / "gw.log"
    sim_args = ["simulate", "--ocamba-port", str(sim_base), "--omneo-port", str(sim_base + 1)]
    sim_args += ["--import-batch-port", str(sim_base + 2), "--webhook-base-url", url]
    # Ocamba's real limits (150 creates a minute) would make the drain take minutes.
    sim_args += ["--webhook-secret", SECRET, "--ocamba-per-second", "500"]
    sim_args += ["--ocamba-per-minute", "30000", "--omneo-processing-delay", "0.01"]
    with process(sim_args, {}, sim_log) as sims:
        env = {
            **simulator_env(sim_log),
            "GATEWAY_OMNEO_WEBHOOK_SECRET": SECRET,
            "GATEWAY_OCAMBA_RATE_PER_SECOND": "500",
            "GATEWAY_OCAMBA_RATE_PER_MINUTE": "30000",
            # A send cut off at the grace deadline is sent again after a restart,
            # at the latest when its lease runs out.
            "GATEWAY_LEASE_SECONDS": "5",
        }
        import_batch = env["GATEWAY_IMPORT_BATCH_URL"].removesuffix("/api")  # /_sim is at the root
        assert sims.poll() is None
        # A backend so slow that the batches it gets in the first second are
        # still in flight when the grace runs out.
        slow = httpx.put(f"{import_batch}/_sim/faults", json={"delay": 4.0})
        assert slow.status_code == 200

        with process(["serve", "--port", str(port)], {**env, **gateway_env(db)}, gw_log) as gw:
            wait_ready(url, gw, gw_log)
            with writing(url) as writer:
                time.sleep(1.0)
                signalled = time.monotonic()
                gw.send_signal(signal.SIGTERM)
                flipped = wait_readyz_draining(url, signalled)
                gw.wait(timeout=DELAY + GRACE + MARGIN + 5)
                exited = time.monotonic() - signalled
                writer.stop.set()
            log = gw_log.read_text(errors="replace")
            assert gw.returncode == 0, log
            assert flipped < 0.5
            assert DELAY <= exited <= DELAY + GRACE + MARGIN, log

        answers = writer.answers
        accepted = writer.accepted()
        # Writes went on being taken through the delay, and nothing but the
        # closed socket at its end ever refused one.
        during = [a for a in answers if a.status == 202 and a.sent > signalled + flipped]
        assert len(during) >= 10, answers
        assert {a.status for a in answers} <= {202, None}
        assert all(a.sent > signalled + DELAY - 0.2 for a in answers if a.status is None)
        # Every 202 is in the store, with a delivery to each backend.
        stored = {e for (e,) in rows(db, "SELECT external_id FROM profile_writes")}
        assert accepted <= stored
        per_backend = rows(db, "SELECT backend, count(*) FROM deliveries GROUP BY backend")
        assert dict(per_backend) == dict.fromkeys(("ocamba", "omneo", "import_batch"), len(stored))
        # The slow backend still had work when the process stopped.
        assert open_deliveries(db, accepted)
        messages = " | ".join(log_messages(gw_log))
        for phase in ("draining", "stopped accepting", "shutdown complete"):
            assert phase in messages, messages

        assert httpx.put(f"{import_batch}/_sim/faults", json={}).status_code == 200
        restart = gateway_env(db, GATEWAY_SHUTDOWN_DELAY="0")
        with process(["serve", "--port", str(port)], {**env, **restart}, gw_log) as gw:
            wait_ready(url, gw, gw_log)
            deadline = time.monotonic() + 30
            while left := open_deliveries(db, accepted):
                assert time.monotonic() < deadline, left[:20]
                time.sleep(0.2)
            last = max(accepted, key=lambda e: int(e.split("-")[1]))
            profile = httpx.get(f"{url}/v1/profiles/{last}", headers=AUTH).json()
            states = {b: d["state"] for b, d in profile["backends"].items()}
            assert states.keys() == {"ocamba", "omneo", "import_batch"}
            assert set(states.values()) <= DELIVERED, states
            started = time.monotonic()
            gw.send_signal(signal.SIGTERM)
            gw.wait(timeout=GRACE + MARGIN + 5)
            # GATEWAY_SHUTDOWN_DELAY=0: no wait before the socket closes.
            assert time.monotonic() - started < GRACE + MARGIN
            assert gw.returncode == 0


def test_a_second_signal_skips_the_delay(tmp_path: Path) -> None:
    port, db, log = free_port(), tmp_path / "gateway.db", tmp_path / "gw.log"
    url = f"http://127.0.0.1:{port}"
    env = gateway_env(db, GATEWAY_SHUTDOWN_DELAY="60", GATEWAY_DISPATCHER_ENABLED="false")
    with process(["serve", "--port", str(port)], env, log) as gw:
        wait_ready(url, gw, log)
        signalled = time.monotonic()
        gw.send_signal(signal.SIGTERM)
        wait_readyz_draining(url, signalled)
        r = httpx.post(f"{url}/v1/profiles", json={"external_id": "late"}, headers=AUTH)
        assert r.status_code == 202
        again = time.monotonic()
        gw.send_signal(signal.SIGINT)
        gw.wait(timeout=MARGIN + 5)
        assert time.monotonic() - again < MARGIN
        assert gw.returncode == 0, log.read_text()
    assert rows(db, "SELECT external_id FROM profile_writes") == [("late",)]


def test_every_worker_drains_with_several_workers(tmp_path: Path) -> None:
    port, db, log = free_port(), tmp_path / "gateway.db", tmp_path / "gw.log"
    url = f"http://127.0.0.1:{port}"
    env = gateway_env(db, GATEWAY_DISPATCHER_ENABLED="false")
    with process(["serve", "--port", str(port), "--workers", "2"], env, log) as gw:
        wait_ready(url, gw, log)
        with writing(url) as writer:
            time.sleep(0.5)
            signalled = time.monotonic()
            gw.send_signal(signal.SIGTERM)
            flipped = wait_readyz_draining(url, signalled)
            # Whichever worker answers, it is draining (a worker's loop sees the
            # signal within its 0.1 s tick).
            time.sleep(0.2)
            with httpx.Client(base_url=url) as http:  # new connections: either worker
                answers = [
                    http.get("/readyz", headers={"Connection": "close"}).status_code
                    for _ in range(10)
                ]
            gw.wait(timeout=DELAY + GRACE + MARGIN + 5)
            exited = time.monotonic() - signalled
        assert gw.returncode == 0, log.read_text()
        assert answers == [503] * 10
        assert flipped < 0.5
        assert DELAY <= exited <= DELAY + GRACE + MARGIN, log.read_text()
    during = [a for a in writer.answers if a.status == 202 and a.sent > signalled + flipped]
    assert during, writer.answers
    stored = {e for (e,) in rows(db, "SELECT external_id FROM profile_writes")}
    assert writer.accepted() <= stored
    assert {a.status for a in writer.answers} <= {202, None}


def test_readyz_answers_503_while_draining(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}", dispatcher_enabled=False
    )
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/readyz").json() == {"status": "ok", "store": "ok"}
        app.state.ctx.draining = True
        r = client.get("/readyz")
        assert (r.status_code, r.json()) == (503, {"status": "draining"})
        assert client.get("/livez").status_code == 200


def _server(delay: float) -> tuple[DrainingServer, list[bool]]:
    drained: list[bool] = []
    config = uvicorn.Config("gateway.app:create_app_from_env", log_config=None)
    server = DrainingServer(config, delay=delay, on_drain=lambda: drained.append(True))
    server.started = True  # as if serving; it never runs
    return server, drained


@pytest.mark.anyio
async def test_the_first_signal_drains_and_the_second_stops() -> None:
    server, drained = _server(delay=0.2)
    server.handle_exit(signal.SIGTERM, None)
    assert drained and not server.should_exit
    assert not await server.on_tick(0)  # still serving through the delay
    await asyncio.sleep(0.25)
    assert await server.on_tick(1)
    assert not server.force_exit

    server, _ = _server(delay=30)
    server.handle_exit(signal.SIGTERM, None)
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit and not server.force_exit
    server.handle_exit(signal.SIGINT, None)  # Ctrl-C while stopping abandons the grace
    assert server.force_exit

    server, drained = _server(delay=0)
    server.handle_exit(signal.SIGINT, None)
    assert drained and server.should_exit
