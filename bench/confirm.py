"""Part 8, webhook confirmations: signed Omneo `profile.created` webhooks posted
to `gateway serve` as fast as a client can, until every delivery is confirmed;
beside it, the bare Starlette app answering the same posts.

Setup (not timed): `gateway serve` on SQLite (WAL, synchronous=FULL) with its
dispatcher on and Omneo its only backend, against the Omneo simulator with its
webhooks off (no `--webhook-base-url`); N profiles (10,000; quick: 200) are
posted in requests of 500 and delivered, so N Omneo deliveries wait in state
`accepted`. The webhooks are then the simulator's own: the profile context of
each profile it stored (`GET /_sim/profiles`), encoded and signed as it signs
them (HMAC-SHA256 of the body, hex, `X-Omneo-Hmac-SHA256`).

Timed: N `POST /v1/webhooks/omneo/profile.created`, each sent once over 32
keep-alive connections by a minimal HTTP/1.1 client (it writes the bytes and
reads the answer itself, as bench/loadgen.py does), while the store is polled;
confirmations/s is N / (first post to the last delivery's `confirmed_at`).
The ceiling is what the same client gets from `bench/bare_app.py`, which
checks the signature, decodes the body and answers 200, storing nothing; it
runs before and after the gateway, and its better run counts.

    .venv/bin/python bench/confirm.py [--quick] [--webhooks 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
from bare_app import bare_app_process
from common import TOKEN, Row, batch_body, free_port, gateway_env, gateway_process
from sims import WEBHOOK_SECRET, awaiting_confirmation, open_counts, read_only, simulators

from gateway.simulators.runner import WEBHOOK_CREATED_PATH

PART = "8 confirm"
FULL = 10_000
QUICK = 200
PER_REQUEST = 500
CONNECTIONS = 32
TARGET = 2_000.0
POLL = 0.1


class Blasted(msgspec.Struct, kw_only=True):
    seconds: float  # first post sent to last answer read
    statuses: dict[str, int]


def _progress(message: str) -> None:
    print(f"  [confirm] {message}", file=sys.stderr, flush=True)


def webhook_requests(port: int, contexts: list[Any]) -> list[bytes]:
    """One signed `profile.created` POST per profile context, as raw HTTP/1.1."""
    out = []
    for ctx in contexts:
        raw = msgspec.json.encode(ctx)
        signature = hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        head = (
            f"POST {WEBHOOK_CREATED_PATH} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\n"
            "User-Agent: omneo-simulator\r\n"
            f"X-Omneo-Hmac-SHA256: {signature}\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n"
        )
        out.append(head.encode() + raw)
    return out


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(head[9:12])


async def blast(port: int, requests: list[bytes]) -> Blasted:
    """Sends every request once, CONNECTIONS at a time, as fast as answers come."""
    todo = list(reversed(requests))
    statuses: dict[str, int] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while todo:
                status = str(await _exchange(reader, writer, todo.pop()))
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return Blasted(seconds=time.perf_counter() - started, statuses=statuses)


def _accepted_backlog(base_url: str, profiles: int, database: Path) -> None:
    """Posts `profiles` for Omneo and waits until every delivery is `accepted`."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with httpx.Client(timeout=120, headers=headers) as client:
        for i in range(0, profiles, PER_REQUEST):
            batch = msgspec.json.decode(batch_body(f"w{i}", min(PER_REQUEST, profiles - i)))
            body = msgspec.json.encode({**batch, "targets": ["omneo"]})
            r = client.post(f"{base_url}/v1/profiles/batch", content=body)
            assert r.status_code == 202, r.text[:500]
    conn = read_only(database)
    try:
        deadline = time.monotonic() + 300
        while open_counts(conn) or awaiting_confirmation(conn) < profiles:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all {profiles} Omneo deliveries accepted in 300 s")
            time.sleep(POLL)
    finally:
        conn.close()


async def _confirm(port: int, requests: list[bytes], database: Path, within: float) -> Any:
    conn = read_only(database)
    try:
        started = time.time()
        sent = asyncio.create_task(blast(port, requests))
        deadline = time.monotonic() + within
        while not sent.done() or awaiting_confirmation(conn):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL)
        posted = await sent
        at, n = conn.execute(
            "SELECT max(confirmed_at), count(*) FROM deliveries"
            " WHERE backend = 'omneo' AND state = 'confirmed'"
        ).fetchone()
        return posted, (float(at) - started if at else float("nan")), int(n)
    finally:
        conn.close()


def measure(webhooks: int, within: float = 600) -> list[Row]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-confirm-")))
        database = tmp / "gateway.db"
        sims = stack.enter_context(simulators())  # no webhook URL: Omneo sends none
        port = free_port()
        env = gateway_env(database, port, **sims.gateway_env())
        env["GATEWAY_OCAMBA_URL"] = env["GATEWAY_IMPORT_BATCH_URL"] = ""  # Omneo alone
        gateway = stack.enter_context(gateway_process(env))
        _progress(f"{webhooks:,} profiles to Omneo through the gateway (not timed)")
        _accepted_backlog(gateway.base_url, webhooks, database)
        omneo = sims.omneo_url
        httpx.get(f"{omneo}/_sim/idle", params={"timeout": 120}, timeout=130).raise_for_status()
        contexts = httpx.get(f"{omneo}/_sim/profiles", timeout=120).json()
        assert len(contexts) == webhooks, (len(contexts), webhooks)

        # The bare app gets the same posts before and after the gateway, and
        # its better run counts: load from other work comes and goes.
        bare_port = free_port()
        stack.enter_context(bare_app_process(bare_port, WEBHOOK_SECRET))
        bare_requests = webhook_requests(bare_port, contexts)
        bares = [asyncio.run(blast(bare_port, bare_requests))]
        _progress(f"  bare app: {webhooks / bares[-1].seconds:,.0f} webhooks/s")
        _progress(f"{webhooks:,} signed webhooks to the gateway, {CONNECTIONS} connections")
        requests = webhook_requests(port, contexts)
        posted, seconds, confirmed = asyncio.run(_confirm(port, requests, database, within))
        _progress(f"  confirmed {confirmed:,} in {seconds:.1f} s; the same posts to the bare app")
        bares.append(asyncio.run(blast(bare_port, bare_requests)))
        _progress(f"  bare app: {webhooks / bares[-1].seconds:,.0f} webhooks/s")

    rate = confirmed / seconds if seconds == seconds and seconds > 0 else 0.0
    bare = min(bares, key=lambda b: b.seconds)
    bare_rate = webhooks / bare.seconds
    spread = ", ".join(f"{webhooks / b.seconds:.0f}" for b in bares)
    all_ok = confirmed == webhooks and posted.statuses == {"200": webhooks}
    return [
        Row(
            part=PART,
            metric="gateway, webhooks confirmed",
            value=rate,
            unit="confirmations/s",
            target=f">= {TARGET:,.0f}",
            met=all_ok and rate >= TARGET,
            note=f"{confirmed:,} of {webhooks:,} Omneo deliveries confirmed {seconds:.1f} s after"
            f" the first post; posts answered in {posted.seconds:.1f} s"
            f" ({webhooks / posted.seconds:,.0f}/s), statuses {posted.statuses}"
            + ("" if all_ok else "; NOT all answered 200 and confirmed"),
        ),
        Row(
            part=PART,
            metric="ceiling: bare Starlette answering the same posts",
            value=bare_rate,
            unit="webhooks/s",
            note=f"checks the signature, decodes, answers 200; {bare.seconds:.1f} s,"
            f" statuses {bare.statuses}; best of 2, before and after the gateway: {spread}",
        ),
        Row(
            part=PART,
            metric="gateway / ceiling",
            value=rate / bare_rate if bare_rate else 0.0,
            unit="ratio",
        ),
    ]


def run(quick: bool) -> list[Row]:
    return measure(QUICK if quick else FULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK} webhooks, no timing")
    parser.add_argument("--webhooks", type=int, help=f"default {FULL:,} ({QUICK} with --quick)")
    args = parser.parse_args()
    for row in measure(args.webhooks or (QUICK if args.quick else FULL)):
        print(msgspec.json.encode(row).decode())


if __name__ == "__main__":
    main()
