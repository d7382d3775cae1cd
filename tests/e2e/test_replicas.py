"""Several gateway processes on one PostgreSQL, draining through the simulators.

Real processes throughout: `gateway simulate` and three `gateway serve`, on a
fresh database of the PostgreSQL server on 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from gateway.simulators.runner import webhook_urls
from tests.servers import free_base_port
from tests.tokens import api_token, entry

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TOKEN = api_token("replica")
SECRET = "replica-webhook-secret"
TOTAL = 20_000
TO_OCAMBA = 600  # Ocamba is paced: 600 creates take about 10 s at the limits below
# Ocamba's 10/s and 150/min, scaled so the drain fits a test: 20 per 1 s window
# and 120 per 2 s "minute" (a steady 60/s), on both the simulator and the gateway.
OCAMBA_PER_SECOND, OCAMBA_PER_MINUTE, OCAMBA_MINUTE = 20, 120, 2.0


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"gw_replicas_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_until_up(url: str, proc: subprocess.Popen[bytes], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process for {url} exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Cluster:
    gateways: list[str]
    processes: list[subprocess.Popen[bytes]]
    sims: dict[str, str]
    database: str


@contextmanager
def cluster(tmp_path: Path, replicas: int = 3) -> Iterator[Cluster]:
    with fresh_database() as database:
        sim_base, gw_base = free_base_port(6), free_base_port(replicas)
        gateways = [f"http://127.0.0.1:{gw_base + i}" for i in range(replicas)]
        sims = {
            "ocamba": f"http://127.0.0.1:{sim_base}",
            "omneo": f"http://127.0.0.1:{sim_base + 1}",
            "import_batch": f"http://127.0.0.1:{sim_base + 2}",
        }
        # Ocamba's simulator runs in a process of its own, as the real Ocamba is a
        # service of its own. Sharing one event loop with the Omneo and
        # import_batch simulators (20,000 profiles in 1,000-profile batches, and
        # 20,000 signed webhooks sent back) stalled that loop for up to 3 s on a
        # loaded 2-core machine; requests the gateway's pacer had admitted in one
        # window then reached Ocamba's rate-limit count in a later one, together
        # with that window's own. That is the cause of the window 429s some runs
        # drew (README, "Running several replicas"). Each process also serves the
        # simulators it is not used for, on ports nobody calls.
        simulate_ocamba = [
            "simulate",
            *("--ocamba-port", str(sim_base), "--omneo-port", str(sim_base + 3)),
            *("--import-batch-port", str(sim_base + 4)),
            *("--ocamba-per-second", str(OCAMBA_PER_SECOND)),
            *("--ocamba-per-minute", str(OCAMBA_PER_MINUTE)),
            *("--ocamba-minute-window", str(OCAMBA_MINUTE)),
        ]
        simulate_others = [
            "simulate",
            *("--ocamba-port", str(sim_base + 5), "--omneo-port", str(sim_base + 1)),
            *("--import-batch-port", str(sim_base + 2)),
            # Omneo's webhooks reach one replica, as through a load balancer.
            *("--webhook-base-url", gateways[0], "--webhook-secret", SECRET),
        ]
        env = {
            "GATEWAY_DATABASE_URL": database,
            "GATEWAY_API_TOKENS": entry("crm", TOKEN),
            "GATEWAY_OCAMBA_URL": sims["ocamba"],
            "GATEWAY_OCAMBA_TOKEN": "ocamba-token",
            "GATEWAY_OCAMBA_RATE_PER_SECOND": str(OCAMBA_PER_SECOND),
            "GATEWAY_OCAMBA_RATE_PER_MINUTE": str(OCAMBA_PER_MINUTE),
            "GATEWAY_OCAMBA_MINUTE_WINDOW": str(OCAMBA_MINUTE),
            "GATEWAY_OMNEO_URL": sims["omneo"] + "/api",
            "GATEWAY_OMNEO_TOKEN": "omneo-token",
            "GATEWAY_OMNEO_WEBHOOK_SECRET": SECRET,
            "GATEWAY_IMPORT_BATCH_URL": sims["import_batch"] + "/api",
            "GATEWAY_IMPORT_BATCH_TOKEN": "import-batch-token",
            # A replica killed mid-batch leaves leases that others take over after this.
            "GATEWAY_LEASE_SECONDS": "30",
            # One simulator process serves three replicas' Omneo and import_batch
            # calls: give it time.
            "GATEWAY_BACKEND_TIMEOUT": "15",
            "GATEWAY_RETRY_BASE": "0.2",
            "GATEWAY_RETRY_CAP": "2",
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_SHUTDOWN_DELAY": "0",  # no load balancer to wait for
        }
        processes = [
            spawn(simulate_ocamba, {}, tmp_path / "simulate-ocamba.log"),
            spawn(simulate_others, {}, tmp_path / "simulate.log"),
        ]
        try:
            wait_until_up(f"{sims['ocamba']}/_sim/stats", processes[0])
            wait_until_up(f"{sims['import_batch']}/_sim/stats", processes[1])
            for i in range(replicas):
                port_env = {**env, "GATEWAY_PORT": str(gw_base + i)}
                processes.append(spawn(["serve"], port_env, tmp_path / f"gateway-{i}.log"))
            for url, proc in zip(gateways, processes[2:], strict=True):
                wait_until_up(f"{url}/readyz", proc)
            yield Cluster(gateways, processes[2:], sims, database)
        finally:
            for proc in reversed(processes):
                stop(proc)


def profiles(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {"external_id": f"r{i}", "email": f"r{i}@example.com"} for i in range(first, first + count)
    ]


def post_all(c: Cluster) -> None:
    """TOTAL profiles in batches of 1000, spread over the replicas; the first
    TO_OCAMBA also go to Ocamba."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(headers=auth, timeout=60) as http:
        first = 0
        n = 0
        while first < TOTAL:
            size = TO_OCAMBA if first == 0 else 1000
            targets = (
                ["ocamba", "omneo", "import_batch"] if first == 0 else ["omneo", "import_batch"]
            )
            url = c.gateways[n % len(c.gateways)]
            body = {"profiles": profiles(first, min(size, TOTAL - first)), "targets": targets}
            r = http.post(f"{url}/v1/profiles/batch", json=body)
            assert r.status_code == 202, r.text
            first += size
            n += 1


async def delivery_states(database: str) -> dict[str, int]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")
        return {r["state"]: r["n"] for r in rows}
    finally:
        await conn.close()


def wait_drained(c: Cluster, within: float) -> dict[str, int]:
    expected = TOTAL * 2 + TO_OCAMBA
    deadline = time.monotonic() + within
    while True:
        states = asyncio.run(delivery_states(c.database))
        # Omneo's stay `accepted` until their webhook confirms them.
        if sum(states.values()) == expected and set(states) == {"confirmed"}:
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"not drained in {within} s: {states}")
        time.sleep(0.5)


def sent_ids(c: Cluster) -> dict[str, collections.Counter[str]]:
    """How many times each external_id / email reached each simulator."""
    received = {b: httpx.get(f"{u}/_sim/received", timeout=60).json() for b, u in c.sims.items()}
    ok = {b: [r for r in rs if r["status"] < 300] for b, rs in received.items()}
    return {
        "import_batch": collections.Counter(
            item["external_id"] for r in ok["import_batch"] for item in r["body"]["data"]
        ),
        "omneo": collections.Counter(
            p["email"] for r in ok["omneo"] for p in r["body"]["profiles"]
        ),
        "ocamba": collections.Counter(
            r["body"]["email"] for r in ok["ocamba"] if r["path"] == "/v1/hood/profiles"
        ),
    }


def assert_every_profile_arrived(sent: dict[str, collections.Counter[str]]) -> None:
    assert set(sent["import_batch"]) == {f"r{i}" for i in range(TOTAL)}
    assert set(sent["omneo"]) == {f"r{i}@example.com" for i in range(TOTAL)}
    assert set(sent["ocamba"]) == {f"r{i}@example.com" for i in range(TO_OCAMBA)}


def assert_ocamba_limits_held(c: Cluster) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{c.sims['ocamba']}/_sim/stats").json()
    assert stats["throttled_window"] == 0, stats
    assert stats["max_arrivals_second_window"] <= OCAMBA_PER_SECOND, stats
    assert stats["max_arrivals_minute_window"] <= OCAMBA_PER_MINUTE, stats
    return stats


def test_three_replicas_drain_20000_profiles_once_each(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        started = time.monotonic()
        post_all(c)
        states = wait_drained(c, within=600)
        elapsed = time.monotonic() - started
        sent = sent_ids(c)
        assert_every_profile_arrived(sent)
        # No replica died, so nothing went out twice.
        for backend, counts in sent.items():
            assert max(counts.values()) == 1, backend
        stats = assert_ocamba_limits_held(c)
        print(f"\n{TOTAL} profiles through 3 replicas in {elapsed:.1f} s; {states}; ocamba {stats}")


def ocamba_leader(c: Cluster) -> int:
    """The replica elected to send to Ocamba, as its /metrics say."""
    deadline = time.monotonic() + 30
    while True:
        for i, url in enumerate(c.gateways):
            try:
                text = httpx.get(f"{url}/metrics", timeout=10).text
            except httpx.TransportError:
                continue  # a replica the test killed
            if 'gateway_sending_leader{backend="ocamba"} 1.0' in text:
                return i
        assert time.monotonic() < deadline, "no replica says it sends to Ocamba"
        time.sleep(0.2)


def send_webhooks_to(c: Cluster, gateway: str) -> None:
    created, updated = webhook_urls(gateway)
    r = httpx.put(
        f"{c.sims['omneo']}/_sim/webhooks", json={"created_url": created, "updated_url": updated}
    )
    assert r.status_code == 200, r.text


def ocamba_admitted(c: Cluster) -> int:
    admitted: int = httpx.get(f"{c.sims['ocamba']}/_sim/stats").json()["admitted"]
    return admitted


def test_a_replica_killed_mid_drain_loses_nothing(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        # The replica killed is Ocamba's sender, so every run takes Ocamba over
        # mid-drain; Omneo's webhooks go to another one, as a load balancer
        # would send them to the replicas left.
        leader = ocamba_leader(c)
        send_webhooks_to(c, c.gateways[(leader + 1) % len(c.gateways)])
        post_all(c)
        deadline = time.monotonic() + 60
        while ocamba_admitted(c) < TO_OCAMBA // 6:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        c.processes[leader].send_signal(signal.SIGKILL)
        c.processes[leader].wait()
        assert ocamba_admitted(c) < TO_OCAMBA, "Ocamba was drained before the kill"
        wait_drained(c, within=600)
        sent = sent_ids(c)
        assert_every_profile_arrived(sent)
        assert ocamba_leader(c) != leader  # another replica took Ocamba over
        # The new sender waited out the dead one's rate window, all its
        # workers with it, and paced what was left: no window 429.
        stats = assert_ocamba_limits_held(c)
        duplicates = {b: sum(n - 1 for n in counts.values()) for b, counts in sent.items()}
        print(f"\nkilled Ocamba's sender: nothing lost; sent again: {duplicates}; ocamba {stats}")
