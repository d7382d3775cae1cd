"""Part 3, drain: a backlog of profiles delivered to all three simulators, with
Ocamba's rate limits switched off (in the simulator and in the gateway's pacer).

The backlog is written into a fresh SQLite file first (the gateway's own store,
dispatcher off); then `gateway serve` starts with its dispatcher on, and the
clock runs from its launch until every delivery is terminal, that is, nothing
is left to send: Ocamba `accepted` (its import never confirms), import_batch
`confirmed`, Omneo `accepted`. Per-backend profiles/s come from the time of each
backend's last terminal delivery, read from the store afterwards.

Omneo's confirmation is measured apart, on a smaller Omneo-only backlog: the
simulator POSTs one signed webhook per profile back to the gateway, which
stores and applies each, so confirmations cost one inbound HTTP request per
profile and would swamp the drain on two shared cores (they run at a few
hundred a second here, against thousands of profiles a second sent).

    .venv/bin/python bench/drain.py [--quick] [--profiles 100000] [--confirm 10000]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from common import GatewayProcess, Row, cpu_seconds, free_port, gateway_env, gateway_process
from sims import (
    ALL_TARGETS,
    NO_LIMIT,
    OPEN_STATES,
    Simulators,
    awaiting_confirmation,
    fill_backlog,
    open_counts,
    read_only,
    simulators,
    state_counts,
)

from gateway.schema import Backend

PART = "3 drain"
FULL = 100_000
QUICK = 500
FULL_CONFIRM = 10_000
QUICK_CONFIRM = 200
TARGET_SECONDS = 20.0
POLL = 0.25


class Drained(msgspec.Struct, kw_only=True):
    profiles: int
    fill_seconds: float
    ready_seconds: float  # launch to /readyz; the dispatcher starts inside it
    finished: bool
    seconds: dict[str, float]  # backend (or "omneo confirmed") -> launch to its last terminal
    done: dict[str, int]  # the same keys -> deliveries terminal (or confirmed)
    states: dict[str, int]  # "backend state" -> deliveries
    gateway_cpu: float  # CPU seconds the gateway used, startup included
    simulators_cpu: float  # the same for the simulators' process, over the drain


def drain(
    profiles: int,
    *,
    targets: tuple[Backend, ...],
    webhooks: bool,
    timeout: float,
    inspect: Callable[[GatewayProcess, Simulators], None] | None = None,
) -> Drained:
    """Queues `profiles`, then runs a gateway until every delivery is terminal
    (and, with `webhooks`, every Omneo delivery confirmed) or `timeout` passes;
    `inspect` then sees the gateway and the simulators before they stop."""
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "drain.db"
        fill_seconds = fill_backlog(database, profiles, targets=targets)
        port = free_port()
        with simulators(
            webhook_base_url=f"http://127.0.0.1:{port}" if webhooks else None,
            ocamba_per_second=NO_LIMIT,
            ocamba_per_minute=NO_LIMIT,
        ) as sims:
            env = gateway_env(database, port, **sims.gateway_env(ocamba_limits_off=True))
            # Only the backends queued: an idle one would only add polling noise.
            for backend in ALL_TARGETS:
                if backend not in targets:
                    env[f"GATEWAY_{backend.upper()}_URL"] = ""
            conn = read_only(database)
            try:
                sims_cpu = cpu_seconds(sims.pid)
                launched = time.time()
                with gateway_process(env) as gw:
                    ready = time.time() - launched
                    finished = _wait(conn, webhooks, time.monotonic() + timeout)
                    gateway_cpu = cpu_seconds(gw.pid)
                    sims_cpu = cpu_seconds(sims.pid) - sims_cpu
                    if inspect is not None:
                        inspect(gw, sims)
                    states = state_counts(conn)
                    seconds, done = _last_terminal(conn, launched)
            finally:
                conn.close()
    return Drained(
        profiles=profiles,
        fill_seconds=fill_seconds,
        ready_seconds=ready,
        finished=finished,
        seconds=seconds,
        done=done,
        states={f"{b} {s}": n for (b, s), n in sorted(states.items())},
        gateway_cpu=gateway_cpu,
        simulators_cpu=sims_cpu,
    )


def _wait(conn: sqlite3.Connection, webhooks: bool, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not open_counts(conn) and not (webhooks and awaiting_confirmation(conn)):
            return True
        time.sleep(POLL)
    return False


def _last_terminal(
    conn: sqlite3.Connection, launched: float
) -> tuple[dict[str, float], dict[str, int]]:
    """Per backend, seconds from launch to its last delivery that ended sending,
    and how many did; "omneo confirmed" likewise for webhook confirmations."""
    seconds: dict[str, float] = {}
    done: dict[str, int] = {}
    rows = conn.execute(
        "SELECT backend, max(COALESCE(accepted_at, updated_at)), count(*) FROM deliveries"
        f" WHERE state NOT IN {OPEN_STATES!r} GROUP BY backend"
    ).fetchall()
    for backend, at, n in rows:
        seconds[str(backend)] = float(at) - launched
        done[str(backend)] = int(n)
    at, n = conn.execute(
        "SELECT max(confirmed_at), count(*) FROM deliveries"
        " WHERE backend = 'omneo' AND state = 'confirmed'"
    ).fetchone()
    if n:
        seconds["omneo confirmed"] = float(at) - launched
        done["omneo confirmed"] = int(n)
    return seconds, done


def _rate(d: Drained, key: str) -> float:
    at = d.seconds.get(key)
    return round(d.done.get(key, 0) / at, 1) if at else 0.0


def rows(full: Drained, confirm: Drained) -> list[Row]:
    total = max((full.seconds[b] for b in ALL_TARGETS if b in full.seconds), default=0.0)
    met = full.finished and total <= TARGET_SECONDS
    states = ", ".join(f"{k}: {n:,}" for k, n in full.states.items())
    out = [
        Row(
            part=PART,
            metric="seconds until every delivery is terminal",
            value=round(total, 1) if full.finished else float("nan"),
            unit="s",
            target=f"<= {TARGET_SECONDS:g} s",
            met=met,
            note=(
                f"{full.profiles:,} profiles x 3 backends, from gateway launch (ready in"
                f" {full.ready_seconds:.1f} s); queued in {full.fill_seconds:.1f} s;"
                f" CPU: gateway {full.gateway_cpu:.0f} s, simulators {full.simulators_cpu:.0f} s;"
                f" end states: {states}"
                + ("" if full.finished else "; NOT drained before the timeout")
            ),
        )
    ]
    for backend in ALL_TARGETS:
        out.append(
            Row(
                part=PART,
                metric=f"{backend} profiles/s",
                value=_rate(full, backend),
                unit="profiles/s",
                note=(
                    f"{full.done.get(backend, 0):,} terminal by"
                    f" {full.seconds.get(backend, 0.0):.1f} s"
                    + ("; one create call per new profile" if backend == "ocamba" else "")
                ),
            )
        )
    out.append(
        Row(
            part=PART,
            metric="omneo confirmed by webhook, profiles/s",
            value=_rate(confirm, "omneo confirmed"),
            unit="profiles/s",
            note=(
                f"Omneo-only backlog of {confirm.profiles:,}: all accepted by"
                f" {confirm.seconds.get('omneo', 0.0):.1f} s, all confirmed by"
                f" {confirm.seconds.get('omneo confirmed', 0.0):.1f} s"
                + ("" if confirm.finished else " (NOT all before the timeout)")
                + "; one signed webhook per profile, 16 in flight"
            ),
        )
    )
    return out


def run(quick: bool) -> list[Row]:
    timeout = 120 if quick else 900
    full = drain(QUICK if quick else FULL, targets=ALL_TARGETS, webhooks=False, timeout=timeout)
    confirm = drain(
        QUICK_CONFIRM if quick else FULL_CONFIRM, targets=("omneo",), webhooks=True, timeout=timeout
    )
    return rows(full, confirm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred profiles, no timing")
    parser.add_argument("--profiles", type=int, help=f"default {FULL:,} ({QUICK} with --quick)")
    parser.add_argument("--confirm", type=int, help=f"Omneo-only backlog, default {FULL_CONFIRM:,}")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    profiles = args.profiles or (QUICK if args.quick else FULL)
    confirm = args.confirm or (QUICK_CONFIRM if args.quick else FULL_CONFIRM)
    full = drain(profiles, targets=ALL_TARGETS, webhooks=False, timeout=args.timeout)
    print(full)
    second = drain(confirm, targets=("omneo",), webhooks=True, timeout=args.timeout)
    print(second)
    for row in rows(full, second):
        print(row)


if __name__ == "__main__":
    main()
