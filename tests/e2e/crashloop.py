"""The crash loop: a backlog of accepted profiles drained by a `gateway serve`
that is killed with SIGKILL at random moments and restarted on the same SQLite
file, then checked against what the simulators received.

Real processes throughout: one `gateway simulate` and one `gateway serve` at a
time, on 127.0.0.1. Used by tests/e2e/test_crash_loop.py and bench/faults.py.

What is checked (see `CrashLoopResult`):

- every profile reached every one of its targets, counted on the simulators'
  own records: import_batch's profile store (`imports` per profile), Omneo's
  request log (a 500-profile batch per request, so 100k profiles fit the log's
  10,000 requests), Ocamba's profile store (its create never deduplicates, so
  one profile per successful create);
- nothing was lost: every accepted profile is in the store and every one of
  its deliveries ends `confirmed`;
- duplicates (at-least-once) are counted per backend;
- nothing whose success was committed was sent again: right after each kill
  the SQLite file is read and the receipts on the simulators counted; at the
  end, none of the deliveries recorded as `accepted`/`confirmed` at a kill has
  more receipts than it had then.
"""

from __future__ import annotations

import collections
import inspect
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.simulators.common import SimState
from tests.e2e.test_replicas import spawn, stop, wait_until_up
from tests.servers import free_base_port, free_port
from tests.tokens import api_token, entry

TOKEN = api_token("crash")
SECRET = "crash-webhook-secret"
BACKENDS = ("ocamba", "omneo", "import_batch")
SUCCESS = ("accepted", "confirmed")  # a delivery whose success is committed
BATCH = 1000  # profiles per inbound request, the API's maximum
# Ocamba creates one profile per call under per-account limits, so only a share
# of the profiles also target it; the limits are raised from 10/s and 150/min so
# that the pacer does not stretch the drain to hours.
OCAMBA_PER_SECOND, OCAMBA_PER_MINUTE = 200, 12_000
# The simulators' request log keeps this many requests, then drops the oldest.
RECORD_LIMIT: int = inspect.signature(SimState).parameters["record_limit"].default

Receipts = dict[str, collections.Counter[str]]  # backend -> external_id -> times received


@dataclass(frozen=True)
class CrashLoopConfig:
    profiles: int
    kills: int
    seed: int
    workdir: Path
    ocamba_share: float = 0.1
    drain_within: float = 600.0  # seconds for the whole drain, kills included
    lease_seconds: float = 10.0  # how long a killed process's leased batches wait


@dataclass
class Snapshot:
    """Taken right after a kill, with the process dead."""

    kill: int
    at: float  # seconds into the drain
    progress: float
    recorded: dict[str, set[str]]  # backend -> external_ids with success committed
    received: Receipts


@dataclass
class CrashLoopResult:
    config: CrashLoopConfig
    to_ocamba: int
    accept_seconds: float
    drain_seconds: float
    wall_seconds: float
    snapshots: list[Snapshot]
    states: dict[str, int]  # delivery state -> count, at the end
    stored_writes: int  # profile_writes rows right after the API process was killed
    lost: dict[str, int]  # backend -> profiles it never received
    lost_in_store: int  # deliveries that did not end `confirmed`
    duplicated: dict[str, int]  # backend -> profiles received more than once
    extra_sends: dict[str, int]  # backend -> receipts beyond the first
    resent_after_success: dict[str, int]  # backend -> sent again after success was recorded
    recorded_unreceived: int  # recorded as a success but not on the simulator: a bug

    def summary(self) -> str:
        c = self.config
        kills = ", ".join(f"{s.at:.1f} s ({s.progress:.0%})" for s in self.snapshots)
        return (
            f"crash loop seed={c.seed}: profiles={c.profiles} (ocamba {self.to_ocamba}),"
            f" kills={len(self.snapshots)} at [{kills}],"
            f" lost={sum(self.lost.values()) + self.lost_in_store},"
            f" duplicates={self.duplicated} (extra sends {self.extra_sends}),"
            f" resent-after-recorded-success={sum(self.resent_after_success.values())},"
            f" states={self.states}, accept {self.accept_seconds:.1f} s,"
            f" drain {self.drain_seconds:.1f} s, wall {self.wall_seconds:.1f} s"
        )


def external_id(i: int) -> str:
    return f"c{i}"


def email_of(ext: str) -> str:
    return f"{ext}@example.com"


def ext_of_email(email: str) -> str:
    return email.split("@", 1)[0]


@dataclass
class Rig:
    """The simulators' process and where the gateway's lives go."""

    config: CrashLoopConfig
    sims: dict[str, str]
    gateway: str
    port: int
    database: Path
    env: dict[str, str]
    lives: int = 0

    def start(self, *, dispatcher: bool = True) -> subprocess.Popen[bytes]:
        env = {**self.env, "GATEWAY_DISPATCHER_ENABLED": "true" if dispatcher else "false"}
        log = self.config.workdir / f"gateway-{self.lives}.log"
        self.lives += 1
        proc = spawn(["serve"], env, log)
        wait_until_up(f"{self.gateway}/readyz", proc)
        return proc


@contextmanager
def rig(config: CrashLoopConfig) -> Iterator[Rig]:
    sim_base, port = free_base_port(3), free_port()
    gateway = f"http://127.0.0.1:{port}"
    sims = {
        "ocamba": f"http://127.0.0.1:{sim_base}",
        "omneo": f"http://127.0.0.1:{sim_base + 1}",
        "import_batch": f"http://127.0.0.1:{sim_base + 2}",
    }
    simulate = [
        "simulate",
        *("--ocamba-port", str(sim_base), "--omneo-port", str(sim_base + 1)),
        *("--import-batch-port", str(sim_base + 2)),
        # Every life of the gateway listens on the same port, so Omneo's
        # webhooks find whichever life is up.
        *("--webhook-base-url", gateway, "--webhook-secret", SECRET),
        *("--ocamba-per-second", str(OCAMBA_PER_SECOND)),
        *("--ocamba-per-minute", str(OCAMBA_PER_MINUTE)),
    ]
    database = config.workdir / "gateway.db"
    env = {
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATABASE_URL": f"sqlite:///{database}",
        "GATEWAY_API_TOKENS": entry("crm", TOKEN),
        "GATEWAY_OCAMBA_URL": sims["ocamba"],
        "GATEWAY_OCAMBA_TOKEN": "ocamba-token",
        "GATEWAY_OCAMBA_RATE_PER_SECOND": str(OCAMBA_PER_SECOND),
        "GATEWAY_OCAMBA_RATE_PER_MINUTE": str(OCAMBA_PER_MINUTE),
        "GATEWAY_OMNEO_URL": sims["omneo"] + "/api",
        "GATEWAY_OMNEO_TOKEN": "omneo-token",
        "GATEWAY_OMNEO_WEBHOOK_SECRET": SECRET,
        # No Omneo delivery may time out to `unconfirmed`: the run ends only
        # when every delivery is confirmed.
        "GATEWAY_OMNEO_CONFIRM_TIMEOUT": "3600",
        "GATEWAY_IMPORT_BATCH_URL": sims["import_batch"] + "/api",
        "GATEWAY_IMPORT_BATCH_TOKEN": "import-batch-token",
        # A killed life's leased batches are sent again once this runs out;
        # a call's timeout stays well inside it so a live worker never loses
        # its lease to another worker of the same life.
        "GATEWAY_LEASE_SECONDS": f"{config.lease_seconds:g}",
        "GATEWAY_BACKEND_TIMEOUT": f"{config.lease_seconds / 2:g}",
        "GATEWAY_RETRY_BASE": "0.2",
        "GATEWAY_RETRY_CAP": "2",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_SHUTDOWN_DELAY": "0",  # no load balancer to wait for
    }
    sim_proc = spawn(simulate, {}, config.workdir / "simulate.log")
    try:
        wait_until_up(f"{sims['import_batch']}/_sim/stats", sim_proc)
        # Omneo retries a webhook that found no gateway (it was dead) for about
        # 400 s instead of 0.35 s, as a real webhook queue would, so the
        # confirmations of batches sent just before a kill still arrive.
        r = httpx.put(
            f"{sims['omneo']}/_sim/webhooks", json={"max_retries": 12, "retry_backoff": 0.1}
        )
        r.raise_for_status()
        yield Rig(config, sims, gateway, port, database, env)
    finally:
        stop(sim_proc)


def accept_all(r: Rig, to_ocamba: int) -> None:
    """Every profile in requests of BATCH; the first `to_ocamba` also to Ocamba."""
    n = r.config.profiles
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as http:
        for lo, hi, targets in (
            (0, to_ocamba, list(BACKENDS)),
            (to_ocamba, n, ["omneo", "import_batch"]),
        ):
            for first in range(lo, hi, BATCH):
                ids = range(first, min(first + BATCH, hi))
                body = {
                    "profiles": [
                        {"external_id": external_id(i), "email": email_of(external_id(i))}
                        for i in ids
                    ],
                    "targets": targets,
                }
                resp = http.post(f"{r.gateway}/v1/profiles/batch", json=body)
                assert resp.status_code == 202, resp.text


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@contextmanager
def sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def delivery_states(path: Path) -> dict[str, int]:
    with sqlite(path) as conn:
        rows = conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()
    return {str(state): int(n) for state, n in rows}


def recorded_successes(path: Path) -> dict[str, set[str]]:
    recorded: dict[str, set[str]] = {b: set() for b in BACKENDS}
    marks = ", ".join("?" * len(SUCCESS))
    with sqlite(path) as conn:
        rows = conn.execute(
            f"SELECT backend, external_id FROM deliveries WHERE state IN ({marks})", SUCCESS
        ).fetchall()
    for backend, ext in rows:
        recorded[str(backend)].add(str(ext))
    return recorded


def receipts(sims: dict[str, str]) -> Receipts:
    """How many times each profile reached each simulator, from their records."""
    with httpx.Client(timeout=300) as http:
        batch_store: list[dict[str, Any]] = http.get(f"{sims['import_batch']}/_sim/profiles").json()
        omneo_log: list[dict[str, Any]] = http.get(f"{sims['omneo']}/_sim/received").json()
        ocamba_store: list[dict[str, Any]] = http.get(f"{sims['ocamba']}/_sim/profiles").json()
    # A full log would have dropped its oldest requests, and with them receipts.
    assert len(omneo_log) < RECORD_LIMIT, "Omneo's request log is full: counts would be short"
    omneo = collections.Counter(
        ext_of_email(p["email"])
        for req in omneo_log
        if req["status"] < 300
        for p in req["body"]["profiles"]
    )
    return {
        "import_batch": collections.Counter(
            {str(p["fields"]["external_id"]): int(p["imports"]) for p in batch_store}
        ),
        "omneo": omneo,
        "ocamba": collections.Counter(ext_of_email(p["email"]) for p in ocamba_store),
    }


def progress(sims: dict[str, str], expected: int) -> float:
    """Share of the drain's work the simulators have seen: sends to each
    backend and Omneo's confirming webhooks delivered. Cheap to ask often."""
    with httpx.Client(timeout=30) as http:
        ib = http.get(f"{sims['import_batch']}/_sim/stats").json()
        om = http.get(f"{sims['omneo']}/_sim/stats").json()
        oc = http.get(f"{sims['ocamba']}/_sim/stats").json()
    done = (
        ib["created"]
        + ib["updated"]
        + om["created"]
        + om["updated"]
        + om["webhooks_delivered"]
        + oc["profiles"]
    )
    return min(1.0, float(done) / expected)


def wait_confirmed(r: Rig, deliveries: int, within: float) -> dict[str, int]:
    deadline = time.monotonic() + within
    while True:
        states = delivery_states(r.database)
        if states == {"confirmed": deliveries}:
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"not drained in {within:.0f} s: {states}")
        time.sleep(1)


def run_crash_loop(config: CrashLoopConfig, say: Callable[[str], None] = print) -> CrashLoopResult:
    rng = random.Random(config.seed)
    n = config.profiles
    to_ocamba = round(n * config.ocamba_share)
    deliveries = 2 * n + to_ocamba
    # Sends to each backend plus Omneo's webhooks, as `progress` counts them.
    work = deliveries + n
    # Random moments of the drain, as shares of its work; sorted, since the
    # drain only moves forward.
    moments = sorted(rng.uniform(0.03, 0.9) for _ in range(config.kills))
    say(f"crash loop seed={config.seed}: kills at {[f'{m:.0%}' for m in moments]} of the drain")
    started = time.monotonic()
    snapshots: list[Snapshot] = []
    with rig(config) as r:
        # Accept with the dispatcher off, so that the whole backlog is queued
        # when the drain starts and every kill lands in it.
        api = r.start(dispatcher=False)
        accept_all(r, to_ocamba)
        accepted = time.monotonic()
        # Even the API process dies by SIGKILL: every 202 must be on disk.
        kill(api)
        with sqlite(r.database) as conn:
            stored_writes = int(conn.execute("SELECT COUNT(*) FROM profile_writes").fetchone()[0])
        say(f"accepted {n} profiles in {accepted - started:.1f} s; {stored_writes} stored")
        for k, moment in enumerate(moments, 1):
            proc = r.start()
            at_start = progress(r.sims, work)
            while True:
                now = progress(r.sims, work)
                # Past its moment, and this life has sent something.
                if now >= moment and now > at_start:
                    break
                assert proc.poll() is None, f"gateway exited with {proc.returncode}"
                assert time.monotonic() - accepted < config.drain_within, "drain stalled"
                time.sleep(0.1)
            time.sleep(rng.uniform(0, 0.3))  # not always on a progress poll
            at = time.monotonic() - accepted
            kill(proc)
            shot = Snapshot(
                kill=k,
                at=at,
                progress=progress(r.sims, work),
                recorded=recorded_successes(r.database),
                received=receipts(r.sims),
            )
            snapshots.append(shot)
            counts = {b: len(s) for b, s in shot.recorded.items()}
            say(f"kill {k} at {at:.1f} s ({shot.progress:.0%} of the drain): recorded {counts}")
        proc = r.start()
        try:
            remaining = config.drain_within - (time.monotonic() - accepted)
            states = wait_confirmed(r, deliveries, max(remaining, 1))
        finally:
            stop(proc)
        drained = time.monotonic()
        final = receipts(r.sims)
    return judge(
        config,
        to_ocamba=to_ocamba,
        snapshots=snapshots,
        final=final,
        states=states,
        stored_writes=stored_writes,
        deliveries=deliveries,
        times=(accepted - started, drained - accepted, drained - started),
    )


def judge(
    config: CrashLoopConfig,
    *,
    to_ocamba: int,
    snapshots: list[Snapshot],
    final: Receipts,
    states: dict[str, int],
    stored_writes: int,
    deliveries: int,
    times: tuple[float, float, float],
) -> CrashLoopResult:
    everyone = {external_id(i) for i in range(config.profiles)}
    wanted = {
        "ocamba": {external_id(i) for i in range(to_ocamba)},
        "omneo": everyone,
        "import_batch": everyone,
    }
    lost = {b: sum(1 for ext in wanted[b] if final[b][ext] < 1) for b in BACKENDS}
    unexpected = {b: set(final[b]) - wanted[b] for b in BACKENDS}
    assert not any(unexpected.values()), f"profiles nobody sent: {unexpected}"
    resent: dict[str, set[str]] = {b: set() for b in BACKENDS}
    unreceived = 0
    for shot in snapshots:
        for b in BACKENDS:
            for ext in shot.recorded[b]:
                then = shot.received[b][ext]
                unreceived += then < 1
                if final[b][ext] > then:
                    resent[b].add(ext)
    return CrashLoopResult(
        config=config,
        to_ocamba=to_ocamba,
        accept_seconds=times[0],
        drain_seconds=times[1],
        wall_seconds=times[2],
        snapshots=snapshots,
        states=states,
        stored_writes=stored_writes,
        lost=lost,
        lost_in_store=deliveries - states.get("confirmed", 0),
        duplicated={b: sum(1 for c in final[b].values() if c > 1) for b in BACKENDS},
        extra_sends={b: sum(c - 1 for c in final[b].values() if c > 1) for b in BACKENDS},
        resent_after_success={b: len(s) for b, s in resent.items()},
        recorded_unreceived=unreceived,
    )
