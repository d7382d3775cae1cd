"""Part 9, budget: what each backend's call budget is spent on, in three
scenarios, each beside its baselines measured in the same run (issue 15, part 5).

The gateway is measured as it is: whatever it does to spare a backend's budget
(change detection, merging queued writes of one person, lanes) shows in the
figures, and so does its absence. "today" is the gateway with `"resend": true`
on every write, which forces full sends (the behaviour before change
detection); the naive forwarder is bench/naive_forwarder.py's one call per
profile per backend. Calls and profiles are counted from the simulators'
request logs (`/_sim/received`, cleared before each pass), every status
included.

(a) nightly re-sync: N profiles (10,000; quick 300) posted to Omneo,
    import_batch and Ocamba (Ocamba's limits off in its simulator and in the
    gateway's pacer, so the passes finish; Omneo's webhooks on, so its
    deliveries end confirmed), in requests of 500, until every delivery is
    terminal. Then the same N posted again with 1% changed (one attribute of
    every 100th profile), twice: first with `"resend": true` ("today"), then
    without, with another 1% changed (changed against what the backends
    have after the "today" pass). Per backend and pass: profiles sent (Ocamba:
    creates plus import entries; Omneo and import_batch: profiles in the
    bodies) and calls. The naive forwarder sends a sample of the same profiles
    (1,000; quick 50) to the same simulators: it has no memory, so it sends
    100% every night; its calls are scaled from the sample to N.

(b) burst of updates: P people (500; quick 20) created in Ocamba through the
    gateway first, then 10 updates of each within one second (10 batch
    requests of P, one every 0.1 s, each a new value of one attribute), with
    Ocamba's limits on (10/s burst, 150 per window) in the simulator and the
    pacer. The window is shortened from 60 s to 15 s in full mode (quick: 3 s
    with 15 per window), so 150 per window is 4x Ocamba's documented budget:
    the 500 creates of the setup take under a minute instead of 3.5. Call
    counts and calls per person do not depend on it; seconds shrink by up to
    4x against a 60 s window. Per pass: import calls admitted, import calls
    carrying each person (mean and max), 429s, and seconds from the first post
    until the import carrying each person's last value reached Ocamba (its
    request log's arrival time; the pass waits for every last value to be in
    the simulator's profiles). Passes: "today" (`"resend": true`), then the
    gateway as it is, then the naive forwarder (one import call per update,
    8 in flight, with each person's Ocamba id; a 429 loses that update), each
    starting at a window boundary.

(c) backfill beside a real-time stream: Ocamba only, its documented limits
    (10/s, 150 per 60 s window; quick: 3 s windows of 15). A pool of R people
    (50; quick 10) is created first; then a B-profile backfill (50,000; quick
    2,000; new people, in requests of 500) is posted with `"priority":
    "bulk"`, and a real-time stream of single `POST /v1/profiles` updates of
    the pool's people follows at 5 writes/s (quick 2/s) for S seconds (60;
    quick 8), open loop. The backfill does not need to finish: the run stops
    S + T seconds after the stream starts (T = 60; quick 10). Per real-time
    write: seconds from its scheduled send until an Ocamba import carrying its
    value (or a later one of the same person) arrived at the simulator; p50
    and p99, a write that never arrived counting as never. Baseline "one
    lane": the same run with the backfill posted without `priority` (the
    gateway before lanes: real-time behind the whole backlog). The naive
    forwarder is not run here: it has no queue, so its backfill is refused
    with 429s rather than waited behind (part 5 counts them).

    .venv/bin/python bench/budget.py [--quick] [--only a b c] [--profiles N] [--people P]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
from common import TOKEN, GatewayProcess, Row, free_port, gateway_env, gateway_process
from naive_forwarder import forward
from sims import (
    NO_LIMIT,
    Simulators,
    awaiting_confirmation,
    open_counts,
    read_only,
    simulators,
    state_counts,
)

from gateway.schema import Backend, NormalizedProfile
from gateway.simulators.ocamba import CREATE_PATH, IMPORT_PATH
from gateway.simulators.runner import DEFAULT_OCAMBA_TOKEN

PART = "9 budget"
PER_REQUEST = 500
POLL = 0.25
RESYNC_TARGET = 0.015  # (a): at most 1.5% of profiles re-sent
CALLS_PER_PERSON_TARGET = 1.0  # (b)
REALTIME_P99_TARGET = 10.0  # (c): seconds
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def _progress(message: str) -> None:
    print(f"  [budget] {message}", flush=True, file=sys.stderr)


class Received(msgspec.Struct):
    path: str
    at: float  # the simulator's time.monotonic() on arrival (CLOCK_MONOTONIC, shared)
    status: int
    body: Any = None


def received(sims: Simulators, backend: Backend) -> list[Received]:
    r = httpx.get(f"{sims.url(backend)}/_sim/received", timeout=60)
    r.raise_for_status()
    return msgspec.json.decode(r.content, type=list[Received])


def clear_received(sims: Simulators, backend: Backend) -> None:
    httpx.delete(f"{sims.url(backend)}/_sim/received", timeout=30).raise_for_status()


def ocamba_profiles(sims: Simulators) -> list[dict[str, Any]]:
    r = httpx.get(f"{sims.ocamba_url}/_sim/profiles", timeout=60)
    r.raise_for_status()
    profiles: list[dict[str, Any]] = r.json()
    return profiles


def person(prefix: str, j: int, visits: int) -> dict[str, Any]:
    """One profile as posted: the same contact details every time, only
    `visits` changes."""
    return {
        "external_id": f"{prefix}-{j}",
        "email": f"{prefix}.{j}@example.com",
        "phone": f"+442071{j % 1_000_000:06d}",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "attributes": {"tier": "gold", "visits": visits},
    }


def batch(
    profiles: list[dict[str, Any]],
    targets: Sequence[str],
    *,
    resend: bool = False,
    priority: str | None = None,
) -> bytes:
    body: dict[str, Any] = {"profiles": profiles, "targets": list(targets)}
    if resend:
        body["resend"] = True
    if priority is not None:
        body["priority"] = priority
    return msgspec.json.encode(body)


def post_all(gw: GatewayProcess, bodies: Sequence[bytes], in_flight: int = 4) -> None:
    async def go() -> None:
        todo = list(reversed(bodies))
        async with httpx.AsyncClient(timeout=120, headers=HEADERS) as client:

            async def worker() -> None:
                while todo:
                    r = await client.post(f"{gw.base_url}/v1/profiles/batch", content=todo.pop())
                    assert r.status_code == 202, r.text[:500]

            await asyncio.gather(*(worker() for _ in range(in_flight)))

    asyncio.run(go())


def settle(conn: sqlite3.Connection, timeout: float, *, confirmations: bool = False) -> bool:
    """Waits until no delivery is open (nor unexpanded, nor, with
    `confirmations`, Omneo awaiting its webhook); False on timeout."""
    deadline = time.monotonic() + timeout
    time.sleep(POLL)
    while open_counts(conn) or (confirmations and awaiting_confirmation(conn)):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True


def next_boundary(window: float) -> None:
    """Sleeps until the next wall-clock multiple of `window` (the simulator's
    and the pacer's windows are aligned to them)."""
    time.sleep((math.floor(time.time() / window) + 1) * window - time.time() + 0.05)


@contextlib.contextmanager
def ocamba_gateway(
    sims: Simulators, database: Path, window: float, per_window: int
) -> Iterator[GatewayProcess]:
    env = gateway_env(database, free_port(), **sims.gateway_env())
    env.update(
        GATEWAY_OMNEO_URL="",
        GATEWAY_IMPORT_BATCH_URL="",
        GATEWAY_OCAMBA_RATE_PER_SECOND="10",
        GATEWAY_OCAMBA_RATE_PER_MINUTE=str(per_window),
        GATEWAY_OCAMBA_MINUTE_WINDOW=str(window),
        GATEWAY_SHUTDOWN_GRACE="1",
    )
    with gateway_process(env) as gw:
        yield gw


def _states(
    before: dict[tuple[str, str], int], after: dict[tuple[str, str], int], backend: str
) -> str:
    diff = {s: n - before.get((b, s), 0) for (b, s), n in after.items() if b == backend}
    return ", ".join(f"{s} {n:,}" for s, n in sorted(diff.items()) if n)


# -- (a) nightly re-sync ------------------------------------------------------

RESYNC_TARGETS: tuple[Backend, ...] = ("ocamba", "omneo", "import_batch")


class Sent(msgspec.Struct):
    profiles: int
    calls: int
    creates: int = 0
    throttled: int = 0


def sent(sims: Simulators, backend: Backend) -> Sent:
    log = received(sims, backend)
    throttled = sum(r.status == 429 for r in log)
    if backend == "ocamba":
        creates = sum(r.path == CREATE_PATH for r in log)
        entries = sum(
            len(r.body.get("profiles", [])) for r in log if r.path == IMPORT_PATH and r.body
        )
        return Sent(creates + entries, len(log), creates, throttled)
    key = "profiles" if backend == "omneo" else "data"
    profiles = sum(len(r.body.get(key, [])) for r in log if isinstance(r.body, dict))
    return Sent(profiles, len(log), 0, throttled)


def resync_visits(j: int, pass_no: int) -> int:
    """Pass 1: the first night; pass 2 changes every 100th profile (j % 100 ==
    1), pass 3 keeps that change and changes another 1% (j % 100 == 2)."""
    return j + sum(k * 1_000_000 for k in (1, 2) if pass_no > k and j % 100 == k)


def resync(n: int, naive_n: int, timeout: float) -> list[Row]:
    port = free_port()
    passes: dict[str, dict[Backend, Sent]] = {}
    notes: dict[str, dict[Backend, str]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-budget-")))
        sims = stack.enter_context(
            simulators(
                webhook_base_url=f"http://127.0.0.1:{port}",
                ocamba_per_second=NO_LIMIT,
                ocamba_per_minute=NO_LIMIT,
            )
        )
        database = tmp / "resync.db"
        env = gateway_env(database, port, **sims.gateway_env(ocamba_limits_off=True))
        gw = stack.enter_context(gateway_process(env))
        conn = read_only(database)
        stack.callback(conn.close)
        for pass_no, label, resend in (
            (1, "first night", False),
            (2, "today", True),
            (3, "gateway", False),
        ):
            for backend in RESYNC_TARGETS:
                clear_received(sims, backend)
            before = state_counts(conn)
            bodies = [
                batch(
                    [
                        person("n", j, resync_visits(j, pass_no))
                        for j in range(i, min(n, i + PER_REQUEST))
                    ],
                    RESYNC_TARGETS,
                    resend=resend,
                )
                for i in range(0, n, PER_REQUEST)
            ]
            started = time.monotonic()
            post_all(gw, bodies)
            finished = settle(conn, timeout, confirmations=True)
            seconds = time.monotonic() - started
            after = state_counts(conn)
            passes[label] = {b: sent(sims, b) for b in RESYNC_TARGETS}
            notes[label] = {
                b: f"deliveries {_states(before, after, b)}; pass {seconds:.0f} s"
                + ("" if finished else f"; NOT settled within {timeout:.0f} s")
                for b in RESYNC_TARGETS
            }
            _progress(
                f"(a) {label}: "
                + ", ".join(
                    f"{b} {s.profiles:,} profiles/{s.calls:,} calls"
                    for b, s in passes[label].items()
                )
                + f" in {seconds:.0f} s"
            )
        sample = [
            msgspec.convert(person("n", j, resync_visits(j, 3)), NormalizedProfile)
            for j in range(naive_n)
        ]
        naive = forward(sims, sample)
    out: list[Row] = []
    for backend in RESYNC_TARGETS:
        scaled = naive.calls[backend] * n / naive_n
        out.append(
            Row(
                part=PART,
                metric=f"(a) re-sync, {backend}: profiles re-sent, naive forwarder",
                value=100.0,
                unit="%",
                note=f"no memory: sends every profile every night; {scaled:,.0f} calls for"
                f" {n:,} (measured {naive.calls[backend]:,} on {naive_n:,}, scaled)",
            )
        )
        for label in ("today", "gateway"):
            s = passes[label][backend]
            share = s.profiles / n
            target, met = "", None
            if label == "gateway":
                target, met = f"<= {RESYNC_TARGET * 100:g} %", share <= RESYNC_TARGET
            what = "today (resend: true)" if label == "today" else "gateway"
            creates = f" ({s.creates:,} creates)" if backend == "ocamba" else ""
            out.append(
                Row(
                    part=PART,
                    metric=f"(a) re-sync, {backend}: profiles re-sent, {what}",
                    value=round(share * 100, 2),
                    unit="%",
                    target=target,
                    met=met,
                    note=f"{s.profiles:,} of {n:,} profiles{creates} in {s.calls:,} calls"
                    f" on the second pass, 1% changed; {notes[label][backend]}",
                )
            )
    return out


# -- (b) burst of updates -----------------------------------------------------

UPDATES = 10


class Burst(msgspec.Struct, kw_only=True):
    label: str
    people: int
    import_calls: int  # admitted (not 429)
    create_calls: int
    throttled: int
    per_person_mean: float  # import calls carrying a person (429s included), per person
    per_person_max: int
    seconds: float  # first post until the last person's last value arrived (nan: not all)
    arrived: int  # people whose last value reached Ocamba


def _ids_by_external(sims: Simulators, prefix: str) -> dict[str, str]:
    """external id (from the email) -> Ocamba id, of `prefix`'s people."""
    out = {}
    for p in ocamba_profiles(sims):
        email = p.get("email") or ""
        if email.startswith(f"{prefix}."):
            out[f"{prefix}-{email.split('.')[1].split('@')[0]}"] = str(p["id"])
    return out


def _values(sims: Simulators) -> dict[str, str]:
    """Ocamba id -> its `visits` custom property now."""
    return {
        str(p["id"]): str(p.get("custom_properties", {}).get("visits", {}).get("value"))
        for p in ocamba_profiles(sims)
    }


def _burst_figures(
    label: str, sims: Simulators, ids: list[str], final: int, started: float
) -> Burst:
    log = received(sims, "ocamba")
    wanted = set(ids)
    carried: Counter[str] = Counter()  # import calls carrying the person, 429s included
    last_at: dict[str, float] = {}
    for r in log:
        if r.path != IMPORT_PATH or not isinstance(r.body, dict):
            continue
        for entry in r.body.get("profiles", []):
            pid = str(entry.get("id"))
            if pid not in wanted:
                continue
            carried[pid] += 1
            if r.status == 429:
                continue
            value = entry.get("custom_properties", {}).get("visits", {}).get("value")
            if value == str(final) and pid not in last_at:
                last_at[pid] = r.at
    arrived = len(last_at)
    # Not all there: until the end of the wait, a lower bound (the note says so).
    seconds = (max(last_at.values()) if arrived == len(ids) else time.monotonic()) - started
    return Burst(
        label=label,
        people=len(ids),
        import_calls=sum(r.path == IMPORT_PATH and r.status != 429 for r in log),
        create_calls=sum(r.path == CREATE_PATH and r.status != 429 for r in log),
        throttled=sum(r.status == 429 for r in log),
        per_person_mean=sum(carried.values()) / len(ids),
        per_person_max=max((carried[i] for i in ids), default=0),
        seconds=seconds,
        arrived=arrived,
    )


def _wait_values(sims: Simulators, ids: list[str], final: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = _values(sims)
        if all(values.get(i) == str(final) for i in ids):
            return
        time.sleep(POLL)


async def _naive_imports(sims: Simulators, rounds: list[list[tuple[str, int]]]) -> None:
    """One import call per update, in arrival order, 8 in flight; no retries."""
    todo = [u for r in rounds for u in r]
    todo.reverse()
    url = f"{sims.ocamba_url}{IMPORT_PATH}"
    headers = {"Authorization": f"Bearer {DEFAULT_OCAMBA_TOKEN}"}
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:

        async def worker() -> None:
            while todo:
                pid, value = todo.pop()
                body = {
                    "profiles": [
                        {
                            "id": pid,
                            "custom_properties": {
                                "tier": {"type": "string", "value": "gold"},
                                "visits": {"type": "string", "value": str(value)},
                            },
                        }
                    ]
                }
                with contextlib.suppress(httpx.HTTPError):
                    await client.post(url, json=body)

        await asyncio.gather(*(worker() for _ in range(8)))


def burst(people: int, window: float, per_window: int, timeout: float) -> list[Row]:
    runs: list[Burst] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-budget-")))
        sims = stack.enter_context(
            simulators(ocamba_per_minute=per_window, ocamba_minute_window=window)
        )
        database = tmp / "burst.db"
        gw = stack.enter_context(ocamba_gateway(sims, database, window, per_window))
        conn = read_only(database)
        stack.callback(conn.close)
        setup_started = time.monotonic()
        post_all(
            gw,
            [
                batch(
                    [person("u", j, 0) for j in range(i, min(people, i + PER_REQUEST))], ["ocamba"]
                )
                for i in range(0, people, PER_REQUEST)
            ],
        )
        settle(conn, timeout)
        by_external = _ids_by_external(sims, "u")
        ids = [by_external[f"u-{j}"] for j in range(people)]
        _progress(f"(b) setup: {people} people created in {time.monotonic() - setup_started:.0f} s")
        base = 0
        for label, resend in (("today", True), ("gateway", False)):
            next_boundary(window)
            clear_received(sims, "ocamba")
            bodies = [
                batch([person("u", j, base + k) for j in range(people)], ["ocamba"], resend=resend)
                for k in range(1, UPDATES + 1)
            ]
            final = base + UPDATES
            started = time.monotonic()

            async def within_one_second(
                bodies: list[bytes] = bodies, started: float = started
            ) -> None:
                async with httpx.AsyncClient(timeout=120, headers=HEADERS) as client:
                    for k, body in enumerate(bodies):
                        await asyncio.sleep(max(0.0, started + k * 0.1 - time.monotonic()))
                        r = await client.post(f"{gw.base_url}/v1/profiles/batch", content=body)
                        assert r.status_code == 202, r.text[:500]

            asyncio.run(within_one_second())
            posted = time.monotonic() - started
            _wait_values(sims, ids, final, timeout)
            settle(conn, timeout)
            runs.append(_burst_figures(label, sims, ids, final, started))
            _progress(f"(b) {label}: {runs[-1]} (posted in {posted:.2f} s)")
            base += 100
        # The naive forwarder: one import per update, with each person's id.
        next_boundary(window)
        clear_received(sims, "ocamba")
        final = base + UPDATES
        rounds = [[(pid, base + k) for pid in ids] for k in range(1, UPDATES + 1)]
        started = time.monotonic()
        asyncio.run(_naive_imports(sims, rounds))
        runs.append(_burst_figures("naive forwarder", sims, ids, final, started))
        _progress(f"(b) naive: {runs[-1]}")
    return _burst_rows(runs, window, per_window)


def _burst_rows(runs: list[Burst], window: float, per_window: int) -> list[Row]:
    out: list[Row] = []
    limits = f"Ocamba 10/s and {per_window} per {window:g} s window"
    for b in runs:
        target, met = "", None
        if b.label == "gateway":
            target = f"<= {CALLS_PER_PERSON_TARGET:g} (every person)"
            met = b.per_person_max <= CALLS_PER_PERSON_TARGET
        what = "today (resend: true)" if b.label == "today" else b.label
        out.append(
            Row(
                part=PART,
                metric=f"(b) {UPDATES} updates x {b.people}: import calls per person, {what}",
                value=round(b.per_person_mean, 2),
                unit="calls",
                target=target,
                met=met,
                note=f"import calls carrying each person, 429s included: mean over {b.people}"
                f" people, max {b.per_person_max}; {b.import_calls:,} import calls admitted,"
                f" {b.create_calls} creates, {b.throttled:,} 429s; {limits}",
            )
        )
        out.append(
            Row(
                part=PART,
                metric=f"(b) seconds until every last update is in Ocamba, {what}",
                value=round(b.seconds, 2),
                unit="s",
                note=f"{b.arrived} of {b.people} people have their last value"
                + (
                    ""
                    if b.arrived == b.people
                    else " (NOT all: lost or not there in time; the value is the time waited,"
                    " a lower bound)"
                ),
            )
        )
    return out


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
        by_external = _ids_by_external(sims, "r")
        ids = [by_external[f"r-{j}"] for j in range(pool)]
        _progress(f"(c) {label}: pool of {pool} created")
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
        _progress(
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
        _progress(f"(c) {label}: {runs[-1]}")
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


# -- the part -----------------------------------------------------------------


def run(
    quick: bool,
    only: Sequence[str] = ("a", "b", "c"),
    resync_profiles: int | None = None,
    people: int | None = None,
) -> list[Row]:
    rows: list[Row] = []
    if "a" in only:
        n = resync_profiles or (300 if quick else 10_000)
        rows += resync(n, min(n, 50 if quick else 1_000), 120 if quick else 900)
    if "b" in only:
        p = people or (20 if quick else 500)
        rows += burst(p, 3.0, 15, 60) if quick else burst(p, 15.0, 150, 600)
    if "c" in only:
        if quick:
            rows += backfill(2_000, 10, 2.0, 8.0, 10.0, 3.0, 15)
        else:
            rows += backfill(50_000, 50, 5.0, 60.0, 60.0, 60.0, 150)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny loads, short windows")
    parser.add_argument("--only", nargs="+", choices=("a", "b", "c"), default=("a", "b", "c"))
    parser.add_argument("--profiles", type=int, help="(a)'s profiles (10,000; quick 300)")
    parser.add_argument("--people", type=int, help="(b)'s people (500; quick 20)")
    args = parser.parse_args()
    for row in run(args.quick, args.only, args.profiles, args.people):
        print(msgspec.json.encode(row).decode())


if __name__ == "__main__":
    main()
