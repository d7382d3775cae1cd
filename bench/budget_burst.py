"""Budget scenario (b), a burst of updates of the same people (see bench/budget.py)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import msgspec
from budget_common import (
    CALLS_PER_PERSON_TARGET,
    HEADERS,
    PART,
    PER_REQUEST,
    POLL,
    batch,
    clear_received,
    ids_by_external,
    next_boundary,
    ocamba_gateway,
    ocamba_profiles,
    person,
    post_all,
    progress,
    received,
    settle,
)
from common import Row
from sims import (
    Simulators,
    read_only,
    simulators,
)

from gateway.simulators.ocamba import CREATE_PATH, IMPORT_PATH
from gateway.simulators.runner import DEFAULT_OCAMBA_TOKEN

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
        by_external = ids_by_external(sims, "u")
        ids = [by_external[f"u-{j}"] for j in range(people)]
        progress(f"(b) setup: {people} people created in {time.monotonic() - setup_started:.0f} s")
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
            progress(f"(b) {label}: {runs[-1]} (posted in {posted:.2f} s)")
            base += 100
        # The naive forwarder: one import per update, with each person's id.
        next_boundary(window)
        clear_received(sims, "ocamba")
        final = base + UPDATES
        rounds = [[(pid, base + k) for pid in ids] for k in range(1, UPDATES + 1)]
        started = time.monotonic()
        asyncio.run(_naive_imports(sims, rounds))
        runs.append(_burst_figures("naive forwarder", sims, ids, final, started))
        progress(f"(b) naive: {runs[-1]}")
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
