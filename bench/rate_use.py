"""Part 4, rate-limit use: how much of Ocamba's documented budget a backlog gets,
and whether Ocamba ever has to refuse the gateway.

An Ocamba-only backlog (far more than the budget lets through in the run) is
queued, then a gateway drains it against the Ocamba simulator with its
documented limits on: 10 requests/s burst, 150/min steady, windows aligned to
wall-clock multiples of their length (seeds/000, seeds/001). The measurement
covers whole steady windows (two of 60 s; in quick mode two of 3 s at 15 per
window), starting at the first window boundary after the gateway is up, and
counts the requests the simulator admitted in them from its request log. The
share is admitted / (windows x per-window limit): the steady rate is the one
that binds over any stretch longer than a minute. 429s are counted over the
whole run, startup included, from the simulator's limiter.

    .venv/bin/python bench/rate_use.py [--quick] [--windows 2]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
from common import Row, free_port, gateway_env, gateway_process
from sims import backend_calls, fill_backlog, simulators

from gateway.simulators.ocamba import CREATE_PATH, IMPORT_PATH
from gateway.simulators.ocamba_limits import OcambaLimitStats

PART = "4 rate use"
PER_SECOND = 10
TARGET_SHARE = 0.97


class Window(msgspec.Struct, frozen=True):
    length: float  # seconds
    limit: int  # requests admitted per window


FULL_WINDOW = Window(60.0, 150)
# 15 per 3 s keeps the steady limit the binding one (the burst would allow 30).
QUICK_WINDOW = Window(3.0, 15)


class _Received(msgspec.Struct):
    path: str
    at: float  # the simulator's time.monotonic() on arrival
    status: int


def measure(window: Window, windows: int, backlog: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "rate.db"
        fill_backlog(database, backlog, targets=("ocamba",))
        with simulators(
            ocamba_per_second=PER_SECOND,
            ocamba_per_minute=window.limit,
            ocamba_minute_window=window.length,
        ) as sims:
            env = gateway_env(database, free_port(), **sims.gateway_env())
            env.update(
                GATEWAY_OMNEO_URL="",
                GATEWAY_IMPORT_BATCH_URL="",
                GATEWAY_OCAMBA_RATE_PER_SECOND=str(PER_SECOND),
                GATEWAY_OCAMBA_RATE_PER_MINUTE=str(window.limit),
                GATEWAY_OCAMBA_MINUTE_WINDOW=str(window.length),
                # A worker stopped mid-batch would otherwise sit out the whole grace
                # waiting for its pacer; its deliveries are of no interest here.
                GATEWAY_SHUTDOWN_GRACE="1",
            )
            with gateway_process(env) as gw:
                # The first, partial window is startup; whole windows from the next.
                start = (math.floor(time.time() / window.length) + 1) * window.length
                end = start + windows * window.length
                # A little past the end, so the answers of the last requests are logged.
                time.sleep(max(0.0, end - time.time()) + 1.0)
                raw = httpx.get(f"{sims.ocamba_url}/_sim/received", timeout=60).content
                # The simulator stamps arrivals with CLOCK_MONOTONIC, shared by every
                # process on the machine; this maps them onto the wall clock.
                offset = time.time() - time.monotonic()
                limiter = msgspec.convert(sims.stats("ocamba"), OcambaLimitStats)
                calls = backend_calls(gw.base_url)
    received = msgspec.json.decode(raw, type=list[_Received])
    business = [r for r in received if r.path in (CREATE_PATH, IMPORT_PATH)]
    inside = [r for r in business if start <= r.at + offset < end]
    admitted = [r for r in inside if r.status != 429]
    per_window = [
        sum(1 for r in admitted if math.floor((r.at + offset - start) / window.length) == i)
        for i in range(windows)
    ]
    allowed = windows * window.limit
    share = len(admitted) / allowed
    throttled = limiter.throttled_window + limiter.throttled_concurrency
    gateway_429 = sum(n for (_, _, status), n in calls.items() if status == "429")
    seconds = windows * window.length
    steady = window.limit / window.length
    creates = sum(1 for r in admitted if r.path == CREATE_PATH)
    return [
        Row(
            part=PART,
            metric="share of Ocamba's steady rate used",
            value=round(share * 100, 1),
            unit="%",
            target=f">= {TARGET_SHARE * 100:g} %",
            met=share >= TARGET_SHARE,
            note=(
                f"{len(admitted)} of {allowed} requests admitted in {windows} whole windows of"
                f" {window.length:g} s (per window: {per_window});"
                f" {creates} creates, {len(admitted) - creates} imports"
            ),
        ),
        Row(
            part=PART,
            metric="Ocamba requests/s achieved",
            value=round(len(admitted) / seconds, 3),
            unit="req/s",
            note=f"allowed steady rate {steady:g}/s ({window.limit} per {window.length:g} s)",
        ),
        Row(
            part=PART,
            metric="429s from Ocamba",
            value=throttled,
            target="0",
            met=throttled == 0,
            note=(
                f"whole run, startup included: {limiter.throttled_window} for a full window,"
                f" {limiter.throttled_concurrency} for too many in flight; the gateway counted"
                f" {gateway_429}; busiest 1 s window {limiter.max_admitted_second_window}"
                f" (limit {PER_SECOND}), most in flight {limiter.max_in_flight_seen}"
            ),
        ),
    ]


def run(quick: bool) -> list[Row]:
    # The backlog outlasts the run: about one request per profile gets through.
    if quick:
        return measure(QUICK_WINDOW, 2, backlog=200)
    return measure(FULL_WINDOW, 2, backlog=3000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s windows, no timing")
    parser.add_argument("--windows", type=int, default=2, help="whole windows measured")
    args = parser.parse_args()
    window = QUICK_WINDOW if args.quick else FULL_WINDOW
    backlog = max(200, int(args.windows * window.limit * 1.5) + 200)
    for row in measure(window, args.windows, backlog):
        print(row)


if __name__ == "__main__":
    main()
