"""What the budget part's scenarios share (bench/budget.py): the simulators'
request logs, profile and batch bodies, posting, settling, the Ocamba gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
from common import TOKEN, GatewayProcess, free_port, gateway_env, gateway_process
from sims import (
    Simulators,
    awaiting_confirmation,
    open_counts,
)

from gateway.schema import Backend

PART = "9 budget"
PER_REQUEST = 500
POLL = 0.25
RESYNC_TARGET = 0.015  # (a): at most 1.5% of profiles re-sent
CALLS_PER_PERSON_TARGET = 1.0  # (b)
REALTIME_P99_TARGET = 10.0  # (c): seconds
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def progress(message: str) -> None:
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


def states_of(
    before: dict[tuple[str, str], int], after: dict[tuple[str, str], int], backend: str
) -> str:
    diff = {s: n - before.get((b, s), 0) for (b, s), n in after.items() if b == backend}
    return ", ".join(f"{s} {n:,}" for s, n in sorted(diff.items()) if n)


def ids_by_external(sims: Simulators, prefix: str) -> dict[str, str]:
    """external id (from the email) -> Ocamba id, of `prefix`'s people."""
    out = {}
    for p in ocamba_profiles(sims):
        email = p.get("email") or ""
        if email.startswith(f"{prefix}."):
            out[f"{prefix}-{email.split('.')[1].split('@')[0]}"] = str(p["id"])
    return out
