"""The `gateway` command, in-process and as real subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from gateway.__main__ import main
from gateway.demo import DEMO_TOKEN
from tests.conftest import TOKEN
from tests.servers import free_base_port, free_port
from tests.tokens import entry


def test_help_lists_commands_and_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for word in ("serve", "demo", "simulate", "migrate", "dead-letters"):
        assert word in out
    assert "GATEWAY_API_TOKENS" in out and "GATEWAY_OMNEO_CONFIRM_TIMEOUT" in out


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: gateway" in capsys.readouterr().out


def test_a_bad_setting_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "eighty")
    assert main(["migrate"]) == 2
    assert "GATEWAY_PORT must be a whole number, not 'eighty'" in capsys.readouterr().err
    monkeypatch.setenv("GATEWAY_PORT", "8080")
    monkeypatch.setenv("GATEWAY_API_TOKENS", "no-colon-here")
    assert main(["migrate"]) == 2
    assert "GATEWAY_API_TOKENS: entry 1 is not app:token" in capsys.readouterr().err


def test_migrate_creates_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "m.db"
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("GATEWAY_SHUTDOWN_DELAY", "0")
    assert main(["migrate"]) == 0
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert {"requests", "deliveries", "webhook_events", "schema_migrations"} <= tables


def _dead_delivery(db: Path) -> int:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO requests (id, app, received_at, targets, profile_count)"
            " VALUES ('r1', 'crm', 0, '[\"omneo\"]', 1)"
        )
        conn.execute(
            "INSERT INTO profile_writes (request_id, position, external_id, body, received_at)"
            " VALUES ('r1', 0, 'ext-1', '{\"external_id\":\"ext-1\"}', 0)"
        )
        cur = conn.execute(
            "INSERT INTO deliveries (write_id, external_id, backend, state, attempts, last_error,"
            " next_attempt_at, created_at, updated_at) VALUES (1, 'ext-1', 'omneo', 'dead', 8,"
            " 'gave up after 8 attempts: HTTP 503', 0, 0, 0)"
        )
    return int(cur.lastrowid or 0)


def test_dead_letters_list_and_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "dl.db"
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("GATEWAY_SHUTDOWN_DELAY", "0")
    assert main(["migrate"]) == 0
    delivery_id = _dead_delivery(db)
    capsys.readouterr()

    assert main(["dead-letters", "list", "--backend", "omneo"]) == 0
    out = capsys.readouterr().out
    assert "ext-1" in out and "gave up after 8 attempts" in out

    assert main(["dead-letters", "replay"]) == 2  # neither --id nor --all
    assert main(["dead-letters", "replay", "--id", str(delivery_id)]) == 0
    assert "requeued 1 deliveries" in capsys.readouterr().out
    state, attempts = (
        sqlite3.connect(db)
        .execute("SELECT state, attempts FROM deliveries WHERE id = ?", (delivery_id,))
        .fetchone()
    )
    assert (state, attempts) == ("pending", 0)
    assert main(["dead-letters", "list"]) == 0
    assert "no deliveries in that state" in capsys.readouterr().out


@contextmanager
def running(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def test_demo_runs_the_whole_flow(tmp_path: Path) -> None:
    port, sims = free_port(), free_base_port()
    with running(["demo", "--port", str(port), "--sim-base-port", str(sims)], tmp_path) as proc:
        wait_for_port(port, proc)
        auth = {"Authorization": f"Bearer {DEMO_TOKEN}"}
        base = f"http://127.0.0.1:{port}"
        # `tier` is the demo's attribute: a field its import_batch database has.
        profile = {
            "external_id": "demo-1",
            "email": "jane@example.com",
            "attributes": {"tier": "gold"},
        }
        assert httpx.post(f"{base}/v1/profiles", json=profile, headers=auth).status_code == 202
        deadline = time.monotonic() + 20
        while True:
            backends = httpx.get(f"{base}/v1/profiles/demo-1", headers=auth).json()["backends"]
            states = {b: d["state"] for b, d in backends.items()}
            if states == {"ocamba": "accepted", "omneo": "confirmed", "import_batch": "confirmed"}:
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.1)
    assert (tmp_path / "demo.db").exists()


def test_simulate_serves_the_three_backends(tmp_path: Path) -> None:
    base = free_base_port()
    ports = ["--ocamba-port", str(base), "--omneo-port", str(base + 1)]
    ports += ["--import-batch-port", str(base + 2), "--import-batch-fields", "CRM_ID, Tier"]
    with running(["simulate", *ports], tmp_path) as proc:
        for p in (base, base + 1, base + 2):
            wait_for_port(p, proc)
        data = [{"email": "a@b.co", "CRM_ID": "1", "Tier": "gold"}, {"tier": "gold"}]
        r = httpx.post(
            f"http://127.0.0.1:{base + 2}/api/v1.1/profiles/import_batch",
            json={"token": "import-batch-token", "db_id": 1, "data": data},
        )
        assert [item["error"] for item in r.json()["result"]] == [0, 106]
        assert httpx.get(f"http://127.0.0.1:{base}/_sim/received").status_code == 200
    assert proc.stdout is not None
    assert f"GATEWAY_OCAMBA_URL=http://127.0.0.1:{base}" in proc.stdout.read()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_takes_host_port_and_workers(
    tmp_path: Path, workers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("GATEWAY_API_TOKENS", entry("crm", TOKEN, ""))
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path / 'serve.db'}")
    monkeypatch.setenv("GATEWAY_SHUTDOWN_DELAY", "0")
    monkeypatch.setenv("GATEWAY_OMNEO_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("GATEWAY_OMNEO_TOKEN", "omneo-token")
    monkeypatch.setenv("GATEWAY_DISPATCHER_ENABLED", "false")
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", workers]
    with running(args, tmp_path) as proc:
        wait_for_port(port, proc)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ids = []
        for i in range(10):
            r = httpx.post(f"{base}/v1/profiles", json={"external_id": f"s{i}"}, headers=auth)
            assert r.status_code == 202
            ids.append(r.json()["request_id"])
        for rid in ids:  # whichever worker answers sees every write
            assert httpx.get(f"{base}/v1/requests/{rid}", headers=auth).status_code == 200
