"""Budget scenario (c), a backfill beside a real-time stream (see bench/budget.py)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
from budget_common import (
    HEADERS,
    PART,
    PER_REQUEST,
    REALTIME_P99_TARGET,
    batch,
    clear_received,
    ids_by_external,
    ocamba_gateway,
    person,
    post_all,
    progress,
    received,
    settle,
)
from common import GatewayProcess, Row
from sims import (
    read_only,
    simulators,
)

from gateway.simulators.ocamba import CREATE_PATH, IMPORT_PATH

# -- (c) backfill beside a real-time stream -----------------------------------


class Stream(msgspec.Struct, kw_only=True):
    label: str
    writes: int
    arrived: int
    p50: float
    p99: float
    lower_bound: bool  # p50 or p99 falls on a write that never arrived
    states: dict[str, int]  # the real-time writes' deliveries at the end
    bulk_created: int  # backfill profiles created in Ocamba during the run
    throttled: int
    import_calls: int


async def _stream(
    gw: GatewayProcess, pool: int, rate: float, seconds: float, first_value: int
) -> list[tuple[int, int, float]]:
    """(person j, value, scheduled send time) of each real-time write, open loop."""
    sent: list[tuple[int, int, float]] = []
    count = int(rate * seconds)
    async with httpx.AsyncClient(timeout=60, headers=HEADERS) as client:

        async def one(j: int, value: int) -> None:
            body = msgspec.json.encode({**person("r", j, value), "targets": ["ocamba"]})
            r = await client.post(f"{gw.base_url}/v1/profiles", content=body)
            assert r.status_code == 202, r.text[:500]

        tasks = []
        start = time.monotonic() + 0.1
        for i in range(count):
            at = start + i / rate
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            j, value = i % pool, first_value + i
            sent.append((j, value, at))
            tasks.append(asyncio.create_task(one(j, value)))
        await asyncio.gather(*tasks)
    return sent


def backfill_run(
    label: str,
    *,
    bulk: int,
    pool: int,
    rate: float,
    seconds: float,
    tail: float,
    window: float,
    per_window: int,
    lanes: bool,
) -> Stream:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-budget-")))
        sims = stack.enter_context(
            simulators(ocamba_per_minute=per_window, ocamba_minute_window=window)
        )
        database = tmp / "backfill.db"
        gw = stack.enter_context(ocamba_gateway(sims, database, window, per_window))
        conn = read_only(database)
        stack.callback(conn.close)
        post_all(gw, [batch([person("r", j, 0) for j in range(pool)], ["ocamba"])])
        settle(conn, 300)
        by_external = ids_by_external(sims, "r")
        ids = [by_external[f"r-{j}"] for j in range(pool)]
        progress(f"(c) {label}: pool of {pool} created")
        clear_received(sims, "ocamba")
        bodies = [
            batch(
                [person("b", j, 0) for j in range(i, min(bulk, i + PER_REQUEST))],
                ["ocamba"],
                priority="bulk" if lanes else None,
            )
            for i in range(0, bulk, PER_REQUEST)
        ]
        post_started = time.monotonic()
        post_all(gw, bodies)
        progress(
            f"(c) {label}: {bulk:,} backfill profiles posted"
            f" in {time.monotonic() - post_started:.0f} s"
        )
        (first_id,) = conn.execute("SELECT COALESCE(max(id), 0) FROM deliveries").fetchone()
        writes = asyncio.run(_stream(gw, pool, rate, seconds, 1))
        end = writes[0][2] + seconds + tail
        time.sleep(max(0.0, end - time.monotonic()))
        log = received(sims, "ocamba")
        ended = time.monotonic()
        states = conn.execute(
            "SELECT state, count(*) FROM deliveries WHERE id > ? AND external_id LIKE 'r-%'"
            " GROUP BY state",
            (first_id,),
        ).fetchall()
    # person id -> [(arrival, value)] of admitted imports.
    arrivals: dict[str, list[tuple[float, int]]] = {}
    for r in log:
        if r.path != IMPORT_PATH or r.status == 429 or not isinstance(r.body, dict):
            continue
        for entry in r.body.get("profiles", []):
            value = entry.get("custom_properties", {}).get("visits", {}).get("value")
            with contextlib.suppress(TypeError, ValueError):
                arrivals.setdefault(str(entry.get("id")), []).append((r.at, int(value)))
    # (seconds, arrived); one that never arrived counts until the end: a lower bound.
    latencies: list[tuple[float, bool]] = []
    for j, value, at in writes:
        there = [t for t, v in arrivals.get(ids[j], []) if v >= value]
        latencies.append((min(there) - at, True) if there else (ended - at, False))
    latencies.sort(key=lambda x: (not x[1], x[0]))  # the missing ones last: slowest

    def pct(q: float) -> tuple[float, bool]:
        rank = max(1, math.ceil(q / 100 * len(latencies)))
        return latencies[rank - 1]

    (p50, p50_there), (p99, p99_there) = pct(50), pct(99)
    return Stream(
        label=label,
        writes=len(writes),
        arrived=sum(there for _, there in latencies),
        p50=p50,
        p99=p99,
        lower_bound=not (p50_there and p99_there),
        states={str(k): int(n) for k, n in states},
        bulk_created=sum(r.path == CREATE_PATH and r.status != 429 for r in log),
        throttled=sum(r.status == 429 for r in log),
        import_calls=sum(r.path == IMPORT_PATH and r.status != 429 for r in log),
    )


def backfill(
    bulk: int, pool: int, rate: float, seconds: float, tail: float, window: float, per_window: int
) -> list[Row]:
    runs = []
    for label, lanes in (("gateway", True), ("one lane", False)):
        runs.append(
            backfill_run(
                label,
                bulk=bulk,
                pool=pool,
                rate=rate,
                seconds=seconds,
                tail=tail,
                window=window,
                per_window=per_window,
                lanes=lanes,
            )
        )
        progress(f"(c) {label}: {runs[-1]}")
    out: list[Row] = []
    shape = (
        f"{bulk:,}-profile backfill, real-time {rate:g}/s for {seconds:g} s over {pool} people,"
        f" run stopped {tail:g} s after the stream; Ocamba 10/s and {per_window} per {window:g} s"
    )
    for s in runs:
        what = (
            "gateway (backfill priority bulk)"
            if s.label == "gateway"
            else "one lane (backfill without priority)"
        )
        missing = ""
        if s.arrived < s.writes:
            missing = f"; {s.writes - s.arrived} NOT there by the end, counted until then"
            if s.lower_bound:
                missing += " (so the percentile is a lower bound)"
        states = ", ".join(f"{k} {n}" for k, n in sorted(s.states.items()))
        target, met = "", None
        if s.label == "gateway":
            target, met = f"p99 < {REALTIME_P99_TARGET:g} s", s.p99 < REALTIME_P99_TARGET
        out.append(
            Row(
                part=PART,
                metric=f"(c) real-time write to Ocamba p99, {what}",
                value=round(s.p99, 2),
                unit="s",
                target=target,
                met=met,
                note=f"{s.arrived} of {s.writes} real-time writes arrived{missing};"
                f" their deliveries at the end: {states};"
                f" {s.bulk_created:,} backfill creates, {s.import_calls:,} imports,"
                f" {s.throttled:,} 429s in the run; {shape}",
            )
        )
        out.append(
            Row(
                part=PART,
                metric=f"(c) real-time write to Ocamba p50, {what}",
                value=round(s.p50, 2),
                unit="s",
            )
        )
    return out
