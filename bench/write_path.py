"""Write-path benchmark: group commit against one commit per write, same run.

Both runs accept the same concurrent writes through real HTTP (`gateway serve`
in its own process on 127.0.0.1, an httpx client here) into a fresh SQLite
file; the only difference is GATEWAY_STORE_BATCH_MAX (256 vs 1). A second part
drives the store alone (no HTTP), where the store is the bottleneck. Figures
are printed as ratios because absolute numbers on shared machines are noise.

    .venv/bin/python bench/write_path.py [--requests 2000] [--concurrency 64] [--profiles 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec

from gateway.schema import NormalizedProfile
from gateway.store.base import NewRequest
from gateway.store.sqlite import SQLiteStore

TOKEN = "bench-token-0123456789abcdef0123456789abcdef"


@contextlib.contextmanager
def gateway_process(tmp: str, batch_max: int) -> Iterator[str]:
    """`gateway serve` in its own process, so the load generator below does not
    share its interpreter (and GIL) with the server it measures."""
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}",
        "GATEWAY_API_TOKENS": f"bench:{TOKEN}:write+read+operate+erase",
        "GATEWAY_STORE_BATCH_MAX": str(batch_max),
        "GATEWAY_OCAMBA_URL": "http://127.0.0.1:9",
        "GATEWAY_OMNEO_URL": "http://127.0.0.1:9",
        "GATEWAY_IMPORT_BATCH_URL": "http://127.0.0.1:9",
        # The gateway refuses a backend URL without its token.
        "GATEWAY_OCAMBA_TOKEN": "ocamba-token",
        "GATEWAY_OMNEO_TOKEN": "omneo-token",
        "GATEWAY_IMPORT_BATCH_TOKEN": "import-batch-token",
        "GATEWAY_DISPATCHER_ENABLED": "false",  # the accept path alone
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("gateway did not start")
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(base: str, requests: int, concurrency: int, profiles: int) -> dict[str, float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(
        base_url=base,
        headers={"Authorization": f"Bearer {TOKEN}"},
        limits=httpx.Limits(max_connections=concurrency),
        timeout=60,
    ) as http:
        bodies = [
            msgspec.json.encode(
                {
                    "profiles": [
                        {"external_id": f"b{i}-{j}", "email": f"b{i}.{j}@example.com"}
                        for j in range(profiles)
                    ]
                }
            )
            for i in range(requests)
        ]
        queue = list(reversed(bodies))

        async def worker() -> None:
            while queue:
                body = queue.pop()
                started = time.perf_counter()
                r = await http.post("/v1/profiles/batch", content=body)
                latencies.append(time.perf_counter() - started)
                assert r.status_code == 202, r.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": requests / elapsed,
        "profiles_per_s": requests * profiles / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
    }


def run(batch_max: int, requests: int, concurrency: int, profiles: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, gateway_process(tmp, batch_max) as base:
        return asyncio.run(load(base, requests, concurrency, profiles))


async def store_only(
    batch_max: int, requests: int, concurrency: int, profiles: int
) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "store.db", max_batch=batch_max)
        await store.open()
        pending = [
            NewRequest(
                request_id=f"r{i}",
                app="bench",
                targets=["ocamba", "omneo", "import_batch"],
                profiles=[
                    NormalizedProfile(external_id=f"b{i}-{j}", email=f"b{i}.{j}@example.com")
                    for j in range(profiles)
                ],
                received_at=time.time(),
            )
            for i in range(requests)
        ]

        async def worker() -> None:
            while pending:
                await store.accept(pending.pop())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        commits = store.commits
        await store.close()
    return requests / elapsed, commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profiles", type=int, default=10, help="profiles per request")
    args = parser.parse_args()
    shape = f"{args.requests} requests x {args.profiles} profiles x 3 backends"
    print(f"HTTP: {shape}, {args.concurrency} in flight")
    results = {}
    for label, batch_max in (("one commit per write", 1), ("group commit (256)", 256)):
        results[label] = r = run(batch_max, args.requests, args.concurrency, args.profiles)
        print(
            f"  {label:<22} {r['requests_per_s']:8.0f} req/s  {r['profiles_per_s']:9.0f} profiles/s"
            f"  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:7.1f} ms"
        )
    base, group = results["one commit per write"], results["group commit (256)"]
    ratio = group["requests_per_s"] / base["requests_per_s"]
    print(f"  group / one: throughput x{ratio:.2f}, p99 x{group['p99_ms'] / base['p99_ms']:.2f}")

    print(f"store alone: {shape}, {args.concurrency} in flight")
    rates = {}
    for batch_max in (1, 256):
        rate, commits = asyncio.run(
            store_only(batch_max, args.requests, args.concurrency, args.profiles)
        )
        rates[batch_max] = rate
        print(f"  batch max {batch_max:<4} {rate:8.0f} req/s  {commits} commits")
    print(f"  group / one: throughput x{rates[256] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
