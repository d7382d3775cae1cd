"""Part 6, memory: the gateway's resident set with a large backlog, and while it
drains it.

1. Backlogged: one `gateway serve` (dispatcher off, so nothing is delivered)
   accepts the profiles over HTTP, 1,000 a request, 4 requests in flight; its
   RSS is sampled throughout and once more after a few idle seconds with the
   whole backlog held. The peak is the kernel's high-water mark (VmHWM).
2. Draining: a fresh `gateway serve` with its dispatcher on starts over the same
   store, against the three simulators (Ocamba's limits off, Omneo's webhooks
   on), and drains for a bounded time; it need not finish.

    .venv/bin/python bench/memory.py [--quick] [--profiles 1000000] [--drain-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec
from common import (
    TOKEN,
    Row,
    batch_body,
    free_port,
    gateway_env,
    gateway_process,
    peak_rss_bytes,
    rss_bytes,
)
from sims import NO_LIMIT, open_counts, read_only, simulators

PART = "6 memory"
FULL = 1_000_000
QUICK = 2_000
FULL_DRAIN = 60.0
QUICK_DRAIN = 3.0
PER_REQUEST = 1000
IN_FLIGHT = 4
TARGET_MB = 250.0
MB = 1024 * 1024


class Sampler:
    """Samples a process's RSS on a thread until stopped."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.pid = pid
        self.every = every
        self.samples: list[tuple[float, int]] = []  # (monotonic, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), rss_bytes(self.pid)))
            except (OSError, RuntimeError):
                return  # the process is gone
            self._stop.wait(self.every)

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    def max(self) -> int:
        return max((b for _, b in self.samples), default=0)


async def _accept(base_url: str, profiles: int) -> None:
    requests = (profiles + PER_REQUEST - 1) // PER_REQUEST
    todo = list(range(requests))
    todo.reverse()
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=120,
    ) as http:

        async def client() -> None:
            while todo:
                i = todo.pop()
                n = min(PER_REQUEST, profiles - i * PER_REQUEST)
                r = await http.post("/v1/profiles/batch", content=batch_body(f"m{i}", n))
                if r.status_code != 202:
                    raise RuntimeError(f"accept: HTTP {r.status_code}: {r.text[:200]}")

        await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))


class Backlogged(msgspec.Struct, kw_only=True):
    seconds: float
    peak: int
    settled: int


class Draining(msgspec.Struct, kw_only=True):
    seconds: float
    start: int  # RSS once ready, before its first samples
    peak: int
    end: int
    delivered: int  # deliveries that left the queue while it ran


def backlog(database: Path, profiles: int) -> Backlogged:
    env = gateway_env(database, free_port())
    with gateway_process(env) as gw, Sampler(gw.pid).running():
        started = time.perf_counter()
        asyncio.run(_accept(gw.base_url, profiles))
        seconds = time.perf_counter() - started
        time.sleep(3)  # idle, holding the backlog
        return Backlogged(seconds=seconds, peak=peak_rss_bytes(gw.pid), settled=rss_bytes(gw.pid))


def drain_for(database: Path, seconds: float) -> Draining:
    conn = read_only(database)
    try:
        before = sum(open_counts(conn).values())
        port = free_port()
        with simulators(
            webhook_base_url=f"http://127.0.0.1:{port}",
            ocamba_per_second=NO_LIMIT,
            ocamba_per_minute=NO_LIMIT,
        ) as sims:
            env = gateway_env(database, port, **sims.gateway_env(ocamba_limits_off=True))
            # Stopped mid-drain: no need to wait for the workers' batches.
            env["GATEWAY_SHUTDOWN_GRACE"] = "1"
            with gateway_process(env) as gw:
                start = rss_bytes(gw.pid)
                with Sampler(gw.pid).running():
                    time.sleep(seconds)
                peak, end = peak_rss_bytes(gw.pid), rss_bytes(gw.pid)
        after = sum(open_counts(conn).values())
    finally:
        conn.close()
    return Draining(
        seconds=seconds, start=start, peak=peak, end=end, delivered=max(0, before - after)
    )


def measure(profiles: int, drain_seconds: float) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "memory.db"
        held = backlog(database, profiles)
        draining = drain_for(database, drain_seconds)
    target = f"<= {TARGET_MB:g} MB"
    return [
        Row(
            part=PART,
            metric=f"peak RSS, {profiles:,} profiles backlogged",
            value=round(held.peak / MB, 1),
            unit="MB",
            target=target,
            met=held.peak / MB <= TARGET_MB,
            note=(
                f"accepted over HTTP in {held.seconds:.0f} s ({profiles / held.seconds:,.0f}"
                f" profiles/s), dispatcher off; {held.settled / MB:.1f} MB idle afterwards"
            ),
        ),
        Row(
            part=PART,
            metric="peak RSS while draining them",
            value=round(draining.peak / MB, 1),
            unit="MB",
            target=target,
            met=draining.peak / MB <= TARGET_MB,
            note=(
                f"fresh process over the same store: {draining.start / MB:.1f} MB once ready,"
                f" {draining.end / MB:.1f} MB after {draining.seconds:g} s of draining"
                f" ({draining.delivered:,} deliveries sent in that time)"
            ),
        ),
    ]


def run(quick: bool) -> list[Row]:
    if quick:
        return measure(QUICK, QUICK_DRAIN)
    return measure(FULL, FULL_DRAIN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 profiles, no timing")
    parser.add_argument("--profiles", type=int)
    parser.add_argument("--drain-seconds", type=float)
    args = parser.parse_args()
    profiles = args.profiles or (QUICK if args.quick else FULL)
    seconds = args.drain_seconds or (QUICK_DRAIN if args.quick else FULL_DRAIN)
    for row in measure(profiles, seconds):
        print(row)


if __name__ == "__main__":
    main()
