"""`gateway dead-letters list|replay`: the same as the API, straight on the store."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import TextIO

from gateway.api.dead_letters import REPLAYABLE
from gateway.config import Settings
from gateway.schema import BACKENDS
from gateway.store.base import DeadLetter, Store
from gateway.store.factory import store_from_settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dl = sub.add_parser(
        "dead-letters",
        help="list or replay deliveries that ended dead, failed or unconfirmed",
        description="Talks to the store in GATEWAY_DATABASE_URL directly; a running "
        "gateway picks replayed deliveries up within a second.",
    )
    actions = dl.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="print them, oldest first")
    replay = actions.add_parser("replay", help="send them again (attempts reset)")
    for p in (listing, replay):
        p.add_argument("--backend", choices=BACKENDS, help="only this backend")
        p.add_argument(
            "--state", choices=REPLAYABLE, default="dead", help="which end state (default dead)"
        )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    replay.add_argument("--id", type=int, dest="delivery_id", help="one delivery by its id")
    replay.add_argument("--all", action="store_true", help="every one of --backend")


def _print(rows: list[DeadLetter], out: TextIO) -> None:
    if not rows:
        print("no deliveries in that state", file=out)
        return
    print(
        f"{'id':>8}  {'backend':<12} {'external_id':<24} {'tries':>5}  {'when':<19}  error",
        file=out,
    )
    for r in rows:
        when = dt.datetime.fromtimestamp(r.updated_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{r.delivery_id:>8}  {r.backend:<12} {r.external_id[:24]:<24} {r.attempts:>5}  "
            f"{when}  {r.last_error or ''}",
            file=out,
        )


async def _run(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    await store.open()
    try:
        if args.action == "list":
            _print(await store.list_deliveries([args.state], args.backend, args.limit), out)
            return 0
        if (args.delivery_id is None) == (not args.all):
            print("give either --id N, or --all (with --backend to narrow it)", file=sys.stderr)
            return 2
        result = await store.replay(
            [args.state], delivery_id=args.delivery_id, backend=args.backend
        )
        print(f"requeued {len(result.requeued)} deliveries", file=out)
        if result.superseded:
            print(
                f"skipped {len(result.superseded)} superseded by a newer delivered write: "
                + ", ".join(map(str, result.superseded)),
                file=out,
            )
        return 0
    finally:
        await store.close()


def main(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    return asyncio.run(_run(store_from_settings(settings), args, out or sys.stdout))
