"""Part 7, end to end: profiles posted to a real `gateway serve` until every
delivery is delivered, beside a bare client posting the same batches straight
to the same fake backends.

50,000 profiles (quick: 1,000) in requests of 500, targets Omneo and
import_batch (`"targets"` in each body; Ocamba is not configured), 4 requests
in flight. The fakes are `gateway simulate` (bench/sims.py) with no rate
limits and no webhooks; a fresh simulators process for each contender, so one
does not run against the profiles and request logs another left behind.

- gateway on SQLite: one `gateway serve` (WAL, synchronous=FULL), dispatcher on;
- gateway on PostgreSQL: the server on 127.0.0.1:5432, a fresh database, one
  replica, then two (`--replicas` picks; posts take turns over them);
- ceiling, direct post: a bare httpx loop posting each 500-profile batch
  straight to Omneo (`POST /api/v3/profiles/batch`, one call) and to
  import_batch (one `import_batch` call), in each vendor's format, bodies
  encoded before the clock starts. It runs before each gateway run and once
  after the last, and its best run counts.

The gateway's clock runs from its first post until its last delivery left the
queue delivered (Omneo `accepted`: queued by Omneo, whose webhooks are off;
import_batch `confirmed`), read from the store's own timestamps once nothing
is open; the ceiling's until its last answer (Omneo's `202`, import_batch's
per-profile results). profiles/s is profiles / that time.

    .venv/bin/python bench/end_to_end.py [--quick] [--profiles 50000] [--replicas 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
from common import TOKEN, GatewayProcess, Row, batch_body, free_port, gateway_env, gateway_process
from sims import OPEN_STATES, Simulators, fresh_postgres, read_only, simulators

from gateway.simulators.runner import (
    DEFAULT_IMPORT_BATCH_DB_ID,
    DEFAULT_IMPORT_BATCH_TOKEN,
    DEFAULT_OMNEO_TOKEN,
)

PART = "7 end to end"
FULL = 50_000
QUICK = 1_000
PER_REQUEST = 500
IN_FLIGHT = 4
TARGETS = ("omneo", "import_batch")
# Delivered: the backend took it. Omneo confirms by webhook later (off here).
DELIVERED = ("accepted", "confirmed")
TARGET_RATIO = 0.2
POLL = 0.2


class Timed(msgspec.Struct, kw_only=True):
    label: str
    profiles: int
    seconds: float  # first post until every delivery is delivered (nan: not all)
    posted_seconds: float  # first post until the last post was answered
    states: dict[str, int] = {}  # "backend state" -> deliveries (the gateway's runs)

    @property
    def rate(self) -> float:
        return self.profiles / self.seconds if self.seconds > 0 else 0.0  # nan > 0 is False


def _progress(message: str) -> None:
    print(f"  [end to end] {message}", flush=True, file=sys.stderr)


def gateway_bodies(prefix: str, profiles: int) -> list[bytes]:
    bodies = []
    for i in range(0, profiles, PER_REQUEST):
        batch = msgspec.json.decode(batch_body(f"{prefix}{i}", min(PER_REQUEST, profiles - i)))
        bodies.append(msgspec.json.encode({**batch, "targets": list(TARGETS)}))
    return bodies


def direct_bodies(gateway: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The same batches in Omneo's and import_batch's own formats."""
    out = []
    for body in gateway:
        profiles: list[dict[str, Any]] = msgspec.json.decode(body)["profiles"]
        omneo = {
            "match_criteria": "email",
            "profiles": [
                {
                    "first_name": p["first_name"],
                    "last_name": p["last_name"],
                    "email": p["email"],
                    "mobile_phone": p["phone"],
                    "custom_attributes": [
                        {"namespace": "app", "handle": k, "type": "string", "value": str(v)}
                        for k, v in p["attributes"].items()
                    ],
                }
                for p in profiles
            ],
        }
        import_batch = {
            "token": DEFAULT_IMPORT_BATCH_TOKEN,
            "db_id": DEFAULT_IMPORT_BATCH_DB_ID,
            "matching": "email",
            "data": [
                {
                    "_fname": p["first_name"],
                    "_lname": p["last_name"],
                    "email": p["email"],
                    "phone": p["phone"],
                    "external_id": p["external_id"],
                    **p["attributes"],
                }
                for p in profiles
            ],
        }
        out.append((msgspec.json.encode(omneo), msgspec.json.encode(import_batch)))
    return out


async def _in_flight(count: int, work: Any) -> None:
    """`work(i)` for i in range(count), IN_FLIGHT at a time, in order of i."""
    todo = list(reversed(range(count)))

    async def worker() -> None:
        while todo:
            await work(todo.pop())

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


async def _direct(sims: Simulators, bodies: list[tuple[bytes, bytes]]) -> float:
    omneo_url = f"{sims.omneo_url}/api/v3/profiles/batch"
    import_url = f"{sims.import_batch_url}/api/v1.1/profiles/import_batch"
    omneo_headers = {
        "Authorization": f"Bearer {DEFAULT_OMNEO_TOKEN}",
        "Content-Type": "application/json",
    }
    json_headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=60) as client:

        async def post(i: int) -> None:
            omneo, import_batch = bodies[i]
            r = await client.post(omneo_url, content=omneo, headers=omneo_headers)
            assert r.status_code == 202, r.text[:500]
            r = await client.post(import_url, content=import_batch, headers=json_headers)
            assert r.status_code == 200, r.text[:500]
            failed = [x for x in r.json()["result"] if x.get("error")]
            assert not failed, failed[:3]

        started = time.perf_counter()
        await _in_flight(len(bodies), post)
        return time.perf_counter() - started


def direct_post(profiles: int, prefix: str) -> Timed:
    bodies = direct_bodies(gateway_bodies(prefix, profiles))
    with simulators() as sims:
        seconds = asyncio.run(_direct(sims, bodies))
    return Timed(label="direct", profiles=profiles, seconds=seconds, posted_seconds=seconds)


class _Store:
    """The gateway's deliveries read from outside: SQLite (read-only) or PostgreSQL."""

    def __init__(self, sqlite_path: Path | None, postgres_url: str | None) -> None:
        self.sqlite = read_only(sqlite_path) if sqlite_path is not None else None
        self.url = postgres_url
        self.pg: asyncpg.Connection | None = None

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        if self.sqlite is not None:
            return [tuple(r) for r in self.sqlite.execute(sql).fetchall()]
        if self.pg is None:
            self.pg = await asyncpg.connect(self.url)
        return [tuple(r) for r in await self.pg.fetch(sql)]

    async def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()
        if self.pg is not None:
            await self.pg.close()


async def _through_gateway(
    gateways: list[GatewayProcess], bodies: list[bytes], profiles: int, store: _Store, within: float
) -> tuple[float, float, dict[str, int]]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=120, headers=headers) as client:

        async def post(i: int) -> None:
            url = f"{gateways[i % len(gateways)].base_url}/v1/profiles/batch"
            r = await client.post(url, content=bodies[i])
            assert r.status_code == 202, r.text[:500]

        started = time.time()
        await _in_flight(len(bodies), post)
        posted = time.time() - started
    # The deliveries are made after the answer, at the dispatcher's first
    # claim (expand): drained once all of them exist and none is open.
    expected = len(TARGETS) * profiles
    deadline = time.monotonic() + within
    made_sql = "SELECT count(*) FROM deliveries"
    open_sql = f"SELECT count(*) FROM deliveries WHERE state IN {OPEN_STATES!r}"
    while (await store.fetch(made_sql))[0][0] < expected or (await store.fetch(open_sql))[0][0]:
        if time.monotonic() > deadline:
            _progress(f"NOT drained within {within:.0f} s")
            break
        await asyncio.sleep(POLL)
    rows = await store.fetch(
        "SELECT backend, state, count(*), max(COALESCE(confirmed_at, accepted_at, updated_at))"
        " FROM deliveries GROUP BY backend, state"
    )
    states = {f"{b} {s}": int(n) for b, s, n, _ in rows}
    made = sum(int(n) for _, _, n, _ in rows)
    delivered = made == expected and all(s in DELIVERED for _, s, _, _ in rows)
    last = max((float(at) for _, _, _, at in rows), default=started)
    return (last - started if delivered else float("nan")), posted, states


@contextlib.contextmanager
def _gateways(
    sims: Simulators, database_url: str, sqlite_path: Path, replicas: int
) -> Iterator[list[GatewayProcess]]:
    with contextlib.ExitStack() as stack:
        started = []
        for _ in range(replicas):
            env = gateway_env(sqlite_path, free_port(), **sims.gateway_env())
            env["GATEWAY_DATABASE_URL"] = database_url
            env["GATEWAY_OCAMBA_URL"] = ""  # not a target here: no idle polling
            started.append(stack.enter_context(gateway_process(env)))
        yield started


def through_gateway(
    engine: str, profiles: int, prefix: str, replicas: int = 1, timeout: float = 600
) -> Timed:
    bodies = gateway_bodies(prefix, profiles)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-e2e-")))
        sqlite_path = tmp / "gateway.db"
        if engine == "sqlite":
            url = f"sqlite:///{sqlite_path}"
        else:
            url = stack.enter_context(fresh_postgres("bench_e2e"))
        sims = stack.enter_context(simulators())
        gateways = stack.enter_context(_gateways(sims, url, sqlite_path, replicas))
        # After the gateway is up: the SQLite file exists by then.
        store = _Store(sqlite_path, None) if engine == "sqlite" else _Store(None, url)

        async def go() -> tuple[float, float, dict[str, int]]:
            try:
                return await _through_gateway(gateways, bodies, profiles, store, timeout)
            finally:
                await store.close()

        seconds, posted, states = asyncio.run(go())
    label = engine if replicas == 1 else f"{engine} x{replicas}"
    return Timed(
        label=label, profiles=profiles, seconds=seconds, posted_seconds=posted, states=states
    )


def rows(directs: Sequence[Timed], runs: Sequence[Timed]) -> list[Row]:
    direct = max(directs, key=lambda d: d.rate)
    spread = ", ".join(f"{d.rate:.0f}" for d in directs)
    shape = f"{direct.profiles:,} profiles, {PER_REQUEST} a request, {IN_FLIGHT} in flight"
    out = [
        Row(
            part=PART,
            metric="ceiling: direct post to the fakes",
            value=direct.rate,
            unit="profiles/s",
            note=f"{shape}; a bare httpx loop, one Omneo and one import_batch call a batch;"
            f" {direct.seconds:.1f} s; best of {len(directs)}, one before each gateway run"
            f" and one after: {spread}",
        )
    ]
    for run in runs:
        ratio = run.rate / direct.rate if direct.rate else 0.0
        states = ", ".join(f"{k}: {n:,}" for k, n in run.states.items())
        finished = run.seconds == run.seconds
        out += [
            Row(
                part=PART,
                metric=f"gateway on {run.label}, delivered",
                value=run.rate,
                unit="profiles/s",
                note=f"{shape}; first post to last delivery {run.seconds:.1f} s"
                f" (posts answered by {run.posted_seconds:.1f} s); {states}"
                + ("" if finished else "; NOT all delivered"),
            ),
            Row(
                part=PART,
                metric=f"gateway on {run.label} / direct post",
                value=ratio,
                unit="ratio",
                target=f">= {TARGET_RATIO}",
                met=finished and ratio >= TARGET_RATIO,
            ),
        ]
    return out


def measure(profiles: int, replicas: Sequence[int] = (1,)) -> list[Row]:
    """The direct post runs before each gateway run and once after the last:
    load from other work on a shared machine comes and goes, and its best
    counts, so the ceiling is not the one caught in a busy moment."""
    contenders = [("sqlite", 1), *(("postgres", n) for n in replicas)]
    directs: list[Timed] = []
    runs: list[Timed] = []
    for i, (engine, n) in enumerate(contenders):
        directs.append(direct_post(profiles, f"d{i}x"))
        _progress(f"direct post of {profiles:,} profiles: {directs[-1].rate:,.0f} profiles/s")
        runs.append(through_gateway(engine, profiles, f"{engine[0]}{n}x", replicas=n))
        _progress(f"gateway on {runs[-1].label}: {runs[-1].rate:,.0f} profiles/s")
    directs.append(direct_post(profiles, "dz"))
    _progress(f"direct post of {profiles:,} profiles: {directs[-1].rate:,.0f} profiles/s")
    return rows(directs, runs)


def run(quick: bool) -> list[Row]:
    # Two replicas on a 2-core machine share its cores: a check that they
    # coordinate at this load, not a scaling figure.
    return measure(QUICK, (1,)) if quick else measure(FULL, (1, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK:,} profiles, no timing")
    parser.add_argument("--profiles", type=int, help=f"default {FULL:,} ({QUICK:,} with --quick)")
    parser.add_argument(
        "--replicas",
        type=int,
        nargs="+",
        help="PostgreSQL runs with N gateways each (default 1 2; 1 with --quick)",
    )
    args = parser.parse_args()
    profiles = args.profiles or (QUICK if args.quick else FULL)
    replicas = args.replicas or ((1,) if args.quick else (1, 2))
    for row in measure(profiles, replicas):
        print(msgspec.json.encode(row).decode())


if __name__ == "__main__":
    main()
