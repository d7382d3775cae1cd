"""`gateway generate-key`, `gateway rotate-key` and `gateway purge`.

rotate-key works on the store in GATEWAY_DATABASE_URL while gateways keep
running: every step is one short transaction over a span of ids, rows written
meanwhile are already sealed under the current key, and a run stopped midway
is simply started again (rows already done are skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Callable
from typing import TextIO

import msgspec

from gateway import retention
from gateway.backends.omneo_keys import match_key_of_profile
from gateway.bulk_import.progress import Progress
from gateway.config import Settings
from gateway.crypto import KeyringError, generate_key
from gateway.mapping.load import mappings_for
from gateway.schema import NormalizedProfile
from gateway.store.base import PurgeResult, SealedTable, Store, StoreError
from gateway.store.factory import store_from_settings
from gateway.store.pii import SPAN

COMMANDS = ("generate-key", "rotate-key", "purge")
_TABLES: tuple[SealedTable, ...] = ("profile_writes", "webhook_events", "deliveries")


class RotateReport(msgspec.Struct):
    resealed: dict[str, int]
    retagged: int
    retired: list[str]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = sub.add_parser(
        "generate-key", help="print a new entry for GATEWAY_ENCRYPTION_KEYS (id:base64key)"
    )
    gen.add_argument("--id", help="the key's id (default k + today's date, e.g. k20260115)")
    rotate = sub.add_parser(
        "rotate-key",
        help="encrypt every stored payload under the first key of GATEWAY_ENCRYPTION_KEYS",
        description="Safe while gateways run; stop and start it again at will. Progress"
        " goes to stderr. Afterwards, keys it reports as no longer needed may be removed.",
    )
    rotate.add_argument(
        "--span", type=int, default=SPAN, help=f"ids per transaction (default {SPAN})"
    )
    rotate.add_argument("--quiet", action="store_true", help="no progress bar")
    purge = sub.add_parser(
        "purge",
        help="remove payloads past GATEWAY_RETENTION_DAYS now (serve does it every"
        " GATEWAY_PURGE_INTERVAL seconds)",
    )
    purge.add_argument("--days", type=float, help="this retention instead of the setting's")


async def rotate(
    store: Store,
    match_key_of: Callable[[NormalizedProfile], str | None],
    *,
    span: int = SPAN,
    on_progress: Callable[[int], None] = lambda done: None,
) -> RotateReport:
    """Reseal every payload not under the current key, re-index the deliveries
    awaiting a webhook, then forget keys nothing is sealed under any more."""
    resealed: dict[str, int] = {table: 0 for table in _TABLES}
    done = 0
    for table in _TABLES:
        after: int | None = 0
        while after is not None:
            count, after = await store.reseal(table, after, span)
            resealed[table] += count
            done += count
            on_progress(done)
    retagged = 0
    after = 0
    while after is not None:
        count, after = await store.retag(match_key_of, after, span)
        retagged += count
        done += count
        on_progress(done)
    return RotateReport(resealed=resealed, retagged=retagged, retired=await store.retire_keys())


async def _rotate(settings: Settings, args: argparse.Namespace, err: TextIO) -> RotateReport:
    store = store_from_settings(settings)
    await store.open()
    try:
        status = await store.seal_status()
        progress = Progress(
            err, total_bytes=status.total, start_bytes=0, start_rows=0, enabled=not args.quiet
        )

        omneo = mappings_for(settings).omneo

        def match_key_of(profile: NormalizedProfile) -> str | None:
            return match_key_of_profile(profile, omneo.match_criteria, omneo.identities)

        try:
            return await rotate(
                store,
                match_key_of,
                span=args.span,
                on_progress=lambda done: progress.update(done, done, 0),
            )
        finally:
            progress.update(status.total, status.total, 0, force=True)
            progress.close()
    finally:
        await store.close()


def main(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        return _main(settings, args, out)
    except StoreError as exc:  # a keyring that cannot read the store, a database down
        print(f"gateway: {exc}", file=sys.stderr)
        return 1


def _main(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "generate-key":
        key_id = args.id or "k" + dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        try:
            print(generate_key(key_id), file=out)
        except KeyringError as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "rotate-key":
        sealer = settings.sealer()
        if not sealer.enabled:
            print("gateway: set GATEWAY_ENCRYPTION_KEYS first", file=sys.stderr)
            return 2
        if args.span < 1:
            print("gateway: --span must be 1 or more", file=sys.stderr)
            return 2
        report = asyncio.run(_rotate(settings, args, sys.stderr))
        sealed = ", ".join(f"{table} {count:,}" for table, count in report.resealed.items())
        print(f"encrypted again under key {sealer.current_id!r}: {sealed};", file=out)
        print(f"re-indexed {report.retagged:,} deliveries awaiting a webhook", file=out)
        if report.retired:
            print(
                "no longer needed, remove from GATEWAY_ENCRYPTION_KEYS: "
                + ", ".join(report.retired),
                file=out,
            )
        return 0
    days = settings.retention_days if args.days is None else args.days
    if days <= 0:
        print("gateway: retention is off (GATEWAY_RETENTION_DAYS=0); give --days", file=sys.stderr)
        return 2
    result = asyncio.run(_purge(msgspec.structs.replace(settings, retention_days=days)))
    print(
        f"removed the payloads of {result.writes:,} writes and {result.webhook_events:,}"
        f" webhook events settled, and {result.idempotency_keys:,} idempotency keys made,"
        f" more than {days:g} days ago",
        file=out,
    )
    return 0


async def _purge(settings: Settings) -> PurgeResult:
    store = store_from_settings(settings)
    await store.open()
    try:
        return await retention.purge_once(store, settings)
    finally:
        await store.close()
