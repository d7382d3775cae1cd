"""Budget scenario (a), a nightly re-sync (see bench/budget.py)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import msgspec
from budget_common import (
    PART,
    PER_REQUEST,
    RESYNC_TARGET,
    batch,
    clear_received,
    person,
    post_all,
    progress,
    received,
    settle,
    states_of,
)
from common import Row, free_port, gateway_env, gateway_process
from naive_forwarder import forward
from sims import (
    NO_LIMIT,
    Simulators,
    read_only,
    simulators,
    state_counts,
)

from gateway.schema import Backend, NormalizedProfile
from gateway.simulators.ocamba import CREATE_PATH, IMPORT_PATH

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
                b: f"deliveries {states_of(before, after, b)}; pass {seconds:.0f} s"
                + ("" if finished else f"; NOT settled within {timeout:.0f} s")
                for b in RESYNC_TARGETS
            }
            progress(
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
