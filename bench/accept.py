"""Part 1, accept throughput: 100-profile batches into the durable store,
beside two ceilings measured in the same run.

- gateway: `gateway serve` (one uvicorn worker, SQLite with WAL and
  synchronous=FULL, dispatcher off so the accept path alone is measured),
  driven by wrk over HTTP/1.1 keep-alive with `accept_post.lua`;
- ceiling (a): `bare_app.py`, a Starlette app under the same uvicorn call
  that decodes the same body with msgspec and answers 202, storing nothing;
  driven the same way;
- ceiling (b): `raw_insert.py --schema minimal`, the simplest store doing the
  same job: a bare sqlite3 loop, one transaction per batch, WAL and
  synchronous=FULL, a profile row and one delivery row per target (3) each,
  with one index on deliveries (backend, state, due);
- beside it, not a ceiling: `raw_insert.py --schema gateway`, the rows the
  gateway's accept writes (its schema, built from its migration files, and its
  indexes; the deliveries come later, at the first claim) from the same kind of
  loop: what the gateway's schema alone costs;
- and what one durable commit costs on this disk (`raw_insert.py --fsync`:
  commits/s of a one-row update), so a claim about fsync cost is measured.

They run in turn, in three rounds of 5 s each (after a warm-up), and
the best round of each counts: load from other work on a shared machine comes
and goes, and this way it does not land on one contender only. wrk (C, one
thread) is shown not to be the bottleneck by what it gets from the bare app,
and by its own CPU use there. The gateway's rows are counted in its database
afterwards: 202s that were not stored would show.

    .venv/bin/python bench/accept.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
from bare_app import bare_app_process
from common import (
    TOKEN,
    Row,
    batch_body,
    cpu_seconds,
    free_port,
    gateway_env,
    gateway_process,
)

PART = "1 accept"
BATCH = 100
# Bodies wrk takes turns over: 6,400 phone numbers, more than validation's cache
# of parsed numbers holds (4,096), so the benchmark does not run on cache hits.
BODIES = 64
# One wrk thread keeps the other core for the server; 32 connections keep the
# gateway's group commit fed and saturate the bare app (measured: 4 to 64).
THREADS = 1
CONNECTIONS = 32
ROUNDS = 3
LUA = Path(__file__).with_name("accept_post.lua")
HERE = Path(__file__).parent


class WrkResult(msgspec.Struct, kw_only=True):
    requests: int
    duration_us: int
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int
    timeouts: int
    p50_us: int
    p99_us: int
    max_us: int

    @property
    def rate(self) -> float:
        return self.requests / (self.duration_us / 1e6)

    @property
    def errors(self) -> int:
        return (
            self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.status_errors
            + self.timeouts
        )


class HttpRun(msgspec.Struct, kw_only=True):
    wrk: WrkResult
    server_cores: float  # server CPU seconds per second of the run
    wrk_cores: float  # wrk's CPU seconds per second of the run


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError(
            "wrk is not installed: `apt-get install wrk` (Debian's package; .ci/run installs it)"
        )
    return path


def run_wrk(url: str, body_file: Path, seconds: int, connections: int = CONNECTIONS) -> WrkResult:
    env = {
        **os.environ,
        "WRK_BODY": str(body_file),
        "WRK_BODIES": str(BODIES),
        "WRK_TOKEN": TOKEN,
    }
    out = subprocess.run(
        [
            wrk_path(),
            f"-t{THREADS}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return msgspec.json.decode(line.removeprefix("WRK_JSON "), type=WrkResult)
    raise RuntimeError(f"no summary from wrk: {out.stdout}\n{out.stderr}")


def measure(url: str, pid: int, body_file: Path, seconds: int) -> HttpRun:
    """One wrk run, with the server's and wrk's CPU use over it."""
    server_before = cpu_seconds(pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_wrk(url, body_file, seconds)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = result.duration_us / 1e6
    wrk_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    if result.errors:
        raise RuntimeError(f"{url}: wrk saw errors: {result}")
    return HttpRun(
        wrk=result,
        server_cores=(cpu_seconds(pid) - server_before) / elapsed,
        wrk_cores=wrk_cpu / elapsed,
    )


def raw_insert(database: Path, seconds: float, *mode: str) -> dict[str, float]:
    """`raw_insert.py` in its own process; `mode`: `--schema minimal`,
    `--schema gateway` or `--fsync`."""
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "raw_insert.py"),
            "--database",
            str(database),
            "--size",
            str(BATCH),
            "--seconds",
            str(seconds),
            *mode,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def stored_profiles(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM profile_writes").fetchone()
    return int(count)


def _progress(message: str) -> None:
    print(f"  [accept] {message}", file=sys.stderr, flush=True)


def _best(runs: list[HttpRun]) -> HttpRun:
    return max(runs, key=lambda r: r.wrk.rate)


def run(quick: bool) -> list[Row]:
    rounds, seconds, warmup = (1, 1, 0) if quick else (ROUNDS, 5, 2)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-accept-")))
        body_file = tmp / "batch.json"
        body_file.write_bytes(batch_body("bench", BATCH))
        for i in range(1, BODIES + 1):
            body_file.with_name(f"{body_file.name}.{i}").write_bytes(batch_body(f"b{i}", BATCH))
        database = tmp / "gateway.db"
        _progress("starting the bare app and the gateway")
        bare = stack.enter_context(bare_app_process(free_port()))
        gateway = stack.enter_context(gateway_process(gateway_env(database, free_port())))
        bare_url = f"{bare.base_url}/v1/profiles/batch"
        gateway_url = f"{gateway.base_url}/v1/profiles/batch"
        answered = 0
        if warmup:
            run_wrk(bare_url, body_file, warmup)
            answered += run_wrk(gateway_url, body_file, warmup).requests

        # Interleaved rounds, best of each: load from other work on a shared
        # machine comes and goes, and should not land on one contender only.
        bare_runs: list[HttpRun] = []
        gateway_runs: list[HttpRun] = []
        raw_rates: list[float] = []
        own_rates: list[float] = []
        commit_rates: list[float] = []
        for i in range(rounds):
            _progress(f"round {i + 1}/{rounds}: wrk -t{THREADS} -c{CONNECTIONS} {seconds}s each")
            bare_runs.append(measure(bare_url, bare.pid, body_file, seconds))
            gateway_runs.append(measure(gateway_url, gateway.pid, body_file, seconds))
            answered += gateway_runs[-1].wrk.requests
            raw = raw_insert(tmp / f"raw-{i}.db", seconds, "--schema", "minimal")
            raw_rates.append(raw["profiles_per_s"])
            own = raw_insert(tmp / f"own-{i}.db", seconds, "--schema", "gateway")
            own_rates.append(own["profiles_per_s"])
            commits = raw_insert(tmp / f"commit-{i}.db", min(seconds, 2), "--fsync")
            commit_rates.append(commits["commits_per_s"])
            _progress(
                f"  bare {bare_runs[-1].wrk.rate * BATCH:9.0f}  gateway"
                f" {gateway_runs[-1].wrk.rate * BATCH:8.0f}  minimal {raw_rates[-1]:8.0f}"
                f"  own schema {own_rates[-1]:8.0f} profiles/s; {commit_rates[-1]:6.0f} commits/s"
            )
        stored = stored_profiles(database)

    bare_run, gateway_run = _best(bare_runs), _best(gateway_runs)
    gateway_rate = gateway_run.wrk.rate * BATCH
    bare_rate = bare_run.wrk.rate * BATCH
    raw_rate = max(raw_rates)
    own_rate = max(own_rates)
    commit_rate = max(commit_rates)
    over_own = gateway_rate / own_rate if own_rate else 0.0
    commit_ms = 1000 / commit_rate if commit_rate else 0.0

    def spread(values: list[float]) -> str:
        return f"best of {len(values)}: " + ", ".join(f"{v:.0f}" for v in values)

    shape = f"{BATCH} profiles x 3 targets per request, wrk -t{THREADS} -c{CONNECTIONS}"
    return [
        Row(
            part=PART,
            metric="gateway",
            value=gateway_rate,
            unit="profiles/s",
            target=">= 50000",
            met=gateway_rate >= 50_000,
            note=f"{shape}; {spread([r.wrk.rate * BATCH for r in gateway_runs])}",
        ),
        Row(
            part=PART,
            metric="ceiling (a) bare Starlette",
            value=bare_rate,
            unit="profiles/s",
            note="decodes, answers 202, stores nothing; "
            + spread([r.wrk.rate * BATCH for r in bare_runs]),
        ),
        Row(
            part=PART,
            metric="ceiling (b) minimal SQLite loop",
            value=raw_rate,
            unit="profiles/s",
            note="a profile row + 3 delivery rows each, one index (backend, state, due),"
            f" a transaction per {BATCH}, WAL, synchronous=FULL; {spread(raw_rates)}",
        ),
        Row(
            part=PART,
            metric="gateway / ceiling (b)",
            value=gateway_rate / raw_rate if raw_rate else 0.0,
            unit="ratio",
            target=">= 0.5",
            met=raw_rate > 0 and gateway_rate / raw_rate >= 0.5,
            note=f"gateway / ceiling (a): {gateway_rate / bare_rate if bare_rate else 0:.3f}",
        ),
        Row(
            part=PART,
            metric="gateway's own schema, SQLite loop",
            value=own_rate,
            unit="profiles/s",
            note="not a ceiling: the rows the gateway's accept writes (schema from its"
            f" migration files) from the same bare loop; gateway / it: {over_own:.2f};"
            f" {spread(own_rates)}",
        ),
        Row(
            part=PART,
            metric="durable commits of a one-row update",
            value=commit_rate,
            unit="commits/s",
            note=f"WAL, synchronous=FULL, same disk: {commit_ms:.2f} ms a commit"
            f" (about one fsync); {spread(commit_rates)}",
        ),
        Row(
            part=PART,
            metric="gateway p99 per request",
            value=gateway_run.wrk.p99_us / 1000,
            unit="ms",
            note=f"p50 {gateway_run.wrk.p50_us / 1000:.1f} ms, {CONNECTIONS} requests in flight",
        ),
        Row(
            part=PART,
            metric="gateway server CPU",
            value=gateway_run.server_cores,
            unit="cores",
            note="one process: near 1.0 means it is CPU-bound",
        ),
        Row(
            part=PART,
            metric="gateway profiles stored",
            value=stored,
            unit="profiles",
            target=f">= {answered * BATCH}",
            met=stored >= answered * BATCH,
            note="every profile answered 202 is in the database",
        ),
        Row(
            part=PART,
            metric="wrk CPU on ceiling (a)",
            value=bare_run.wrk_cores,
            unit="cores",
            note=f"load generator use at {bare_rate / gateway_rate if gateway_rate else 0:.1f}x"
            " the gateway's rate: it is not the bottleneck",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, tiny loads")
    args = parser.parse_args()
    for row in run(args.quick):
        print(msgspec.json.encode(row).decode())


if __name__ == "__main__":
    main()
