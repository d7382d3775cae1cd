"""A backend down for a while, end to end: the API keeps answering 202 fast, the
other backends keep delivering, the circuit breaker stops hammering the dead
one (and says so in its metric), and once it is back everything arrives:
nothing dead, nothing lost.

import_batch is the one that goes down (the simulator answers 503 to every
call, as a load balancer with no healthy upstream does); Omneo and Ocamba stay up.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.simulators.common import Faults
from gateway.simulators.import_batch import import_batch_sim
from gateway.simulators.ocamba import ocamba_sim
from gateway.simulators.omneo import omneo_sim
from tests.e2e.flow import Flow, running_flow

pytestmark = pytest.mark.anyio

WRITE_INTERVAL = 0.2  # seconds between batch writes: 5 a second, 10 profiles each
PROFILES_PER_WRITE = 10
OCAMBA_EVERY = 5  # one single-profile write to Ocamba per this many batch writes (1/s)
DONE = ("accepted", "confirmed")


@dataclass
class Writes:
    """What the writer sent, and how long each answer took."""

    latencies: list[tuple[float, float]] = field(default_factory=list)  # (started, seconds)
    statuses: list[int] = field(default_factory=list)
    batch_ids: list[str] = field(default_factory=list)  # to Omneo and import_batch
    ocamba_ids: list[str] = field(default_factory=list)

    def quantile(self, q: float, start: float, end: float) -> float:
        during = sorted(s for at, s in self.latencies if start <= at <= end)
        assert during, "no write in the window"
        return during[min(len(during) - 1, int(len(during) * q))]

    def p99(self, start: float, end: float) -> float:
        return self.quantile(0.99, start, end)


async def write_steadily(flow: Flow, writes: Writes, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        ids = [f"w{n}-{i}" for i in range(PROFILES_PER_WRITE)]
        await post(flow, writes, writes.batch_ids, ids, "example.com", ["omneo", "import_batch"])
        if n % OCAMBA_EVERY == 0:
            await post(flow, writes, writes.ocamba_ids, [f"oc{n}"], "x.io", ["ocamba"])
        n += 1
        await asyncio.sleep(max(0.0, WRITE_INTERVAL - (time.monotonic() - started)))


async def post(
    flow: Flow, writes: Writes, sent: list[str], ids: list[str], domain: str, targets: list[str]
) -> None:
    profiles = [{"external_id": i, "email": f"{i}@{domain}"} for i in ids]
    at = time.monotonic()
    r = await flow.http.post("/v1/profiles/batch", json={"profiles": profiles, "targets": targets})
    writes.latencies.append((at, time.monotonic() - at))
    writes.statuses.append(r.status_code)
    if r.status_code == 202:
        sent.extend(ids)


def _query(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def query(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    return await asyncio.to_thread(_query, db, sql, *args)


async def undelivered(db: Path, backends: tuple[str, ...], created_before: float) -> int:
    marks = ", ".join("?" for _ in backends)
    [(count,)] = await query(
        db,
        f"SELECT COUNT(*) FROM deliveries WHERE backend IN ({marks})"
        " AND state NOT IN ('accepted', 'confirmed') AND created_at < ?",
        *backends,
        created_before,
    )
    assert isinstance(count, int)
    return count


def circuit_states(metrics: str) -> dict[str, float]:
    return {
        backend: float(value)
        for backend, value in re.findall(
            r'^gateway_circuit_state\{backend="(\w+)"\} (\S+)$', metrics, re.MULTILINE
        )
    }


def max_probes(outage: float, cooldown: float, max_cooldown: float) -> int:
    """The most probes the breaker can send within `outage` seconds of being
    open: each open period lasts at least half its (doubling) cooldown."""
    elapsed, probes = 0.0, 0
    while True:
        elapsed += min(cooldown * 2**probes, max_cooldown) / 2
        if elapsed > outage:
            return probes
        probes += 1


@dataclass
class Report:
    profiles: int
    write_p99: float
    write_p50_before: float  # the same writer, before the backend went down
    write_p50_during: float
    dead_backend_calls: int
    call_bound: int
    drain_seconds: float


async def run_outage(tmp_path: Path, outage: float, env: dict[str, str]) -> Report:
    db = tmp_path / "gateway.db"
    async with running_flow(tmp_path, env=env) as flow:
        settings = flow.settings
        dead = import_batch_sim(flow.sims.import_batch)
        writes, stop = Writes(), asyncio.Event()
        writer = asyncio.create_task(write_steadily(flow, writes, stop))
        try:
            flowing_at = time.monotonic()
            await asyncio.sleep(2)  # everything flowing

            dead.faults = Faults(outage=True)
            down_at = time.monotonic()
            seen: dict[str, float] = {}
            while time.monotonic() < down_at + outage:
                for backend, value in circuit_states(await flow.metrics()).items():
                    seen[backend] = max(seen.get(backend, 0.0), value)
                await asyncio.sleep(0.5)
            # The other backends kept up: what was written up to a few seconds
            # ago has reached them, while import_batch got nothing through.
            assert await undelivered(db, ("omneo", "ocamba"), time.time() - 5) == 0
            assert await undelivered(db, ("import_batch",), time.time()) > 0
            up_at, up_wall = time.monotonic(), time.time()
            dead.faults = Faults()

            during = [r for r in dead.received.items if down_at <= r.at < up_at]
            assert during and {r.status for r in during} == {503}
            assert seen == {"ocamba": 0.0, "omneo": 0.0, "import_batch": 2.0}, seen

            await asyncio.sleep(2)  # writes go on after the recovery too
        finally:
            stop.set()
            await writer

        # The backlog drains: everything written during the outage arrives.
        deadline = time.monotonic() + 60 + outage / 5
        while await undelivered(db, ("import_batch",), up_wall):
            assert time.monotonic() < deadline, "the backlog did not drain"
            await asyncio.sleep(0.1)
        drained = time.monotonic() - up_at
        final = time.monotonic() + 30
        while await undelivered(db, ("omneo", "ocamba", "import_batch"), time.time() + 1):
            assert time.monotonic() < final, "deliveries left over"
            await asyncio.sleep(0.1)

        # Nothing dead or failed, nothing lost: every profile is in each backend.
        states = await query(db, "SELECT DISTINCT state FROM deliveries")
        assert {state for (state,) in states} <= set(DONE), states
        assert set(writes.statuses) == {202}
        await omneo_sim(flow.sims.omneo).idle()
        emails = {f"{i}@example.com" for i in writes.batch_ids}
        imported = {p.fields.get("email") for p in dead.profiles.values()}
        omneo = {p.fields.get("email") for p in omneo_sim(flow.sims.omneo).profiles.values()}
        ocamba = {p.email for p in ocamba_sim(flow.sims.ocamba).profiles.values()}
        assert imported == emails and omneo == emails
        assert ocamba == {f"{i}@x.io" for i in writes.ocamba_ids}

        metrics = await flow.metrics()
        assert circuit_states(metrics)["import_batch"] == 0.0
        assert 'gateway_circuit_transitions_total{backend="import_batch",to="open"}' in metrics
        assert 'gateway_deliveries_total{backend="import_batch",outcome="dead"}' not in metrics

        # The dead backend saw the calls that tripped the breaker, those already
        # under way, and the probes; not one call per batch written.
        bound = (
            settings.breaker_failures
            + settings.workers_per_backend
            + max_probes(outage, settings.breaker_cooldown, settings.breaker_max_cooldown)
        )
        assert len(during) <= bound, (len(during), bound)
        return Report(
            profiles=len(writes.batch_ids) + len(writes.ocamba_ids),
            write_p99=writes.p99(down_at, up_at),
            write_p50_before=writes.quantile(0.5, flowing_at, down_at),
            write_p50_during=writes.quantile(0.5, down_at, up_at),
            dead_backend_calls=len(during),
            call_bound=bound,
            drain_seconds=drained,
        )


async def test_a_backend_outage_is_held_off_by_the_breaker_and_drained(tmp_path: Path) -> None:
    # A shorter cap on the cooldown than the default 30 s, so the recovery is
    # noticed within seconds of a 15 s outage.
    report = await run_outage(tmp_path, 15.0, {"GATEWAY_BREAKER_MAX_COOLDOWN": "4"})
    print(f"\n{report}")
    assert report.write_p99 < 1.0, report
    # Full speed: the dead backend does not slow the API down (a loose bound,
    # as the simulators share this process and its event loop).
    assert report.write_p50_during <= 3 * report.write_p50_before + 0.05, report
    assert report.drain_seconds < 15, report


# Every delivery setting at its default (the e2e harness speeds up retries).
DEFAULTS = {
    "GATEWAY_BATCH_LINGER": "0.2",
    "GATEWAY_RETRY_BASE": "1",
    "GATEWAY_RETRY_CAP": "300",
    "GATEWAY_BACKEND_TIMEOUT": "30",
    "GATEWAY_LEASE_SECONDS": "60",
}


@pytest.mark.faults
async def test_a_five_minute_outage_with_default_settings_loses_nothing(tmp_path: Path) -> None:
    report = await run_outage(tmp_path, 300.0, DEFAULTS)
    print(f"\n{report}")
    assert report.write_p99 < 1.0, report
    assert report.write_p50_during <= 3 * report.write_p50_before + 0.05, report
    # The default 30 s cooldown cap: the recovery is seen within one probe.
    assert report.drain_seconds < 60, report
