"""A PostgreSQL database of their own for the store tests.

The server is the one on 127.0.0.1:5432 (trust auth; CI starts it). Nothing here
skips when it is down: the tests that need it fail, loudly.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg

SERVER = "postgresql://postgres@127.0.0.1:5432/"
ADMIN_DSN = SERVER + "test"  # exists; used only to create and drop ours
TABLES = (
    "requests, idempotency_keys, people, profile_writes, deliveries, backend_ids, webhook_events,"
    " encryption_keys, ui_sessions, sent_fields"
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to the end from synchronous code, on a thread of its own so
    that it works whether or not an event loop is running on this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def execute(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


@contextmanager
def fresh_database(prefix: str = "gateway_test") -> Iterator[str]:
    """An empty database with a random name, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    run(execute(ADMIN_DSN, f'CREATE DATABASE "{name}"'))
    try:
        yield SERVER + name
    finally:
        run(execute(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def truncate(dsn: str) -> None:
    run(execute(dsn, f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))


async def terminate_backends(dsn: str, where: str, *args: object) -> int:
    """End the server sessions that `where` picks from pg_stat_activity (of
    this database), as a crash or a network cut would; returns how many."""
    rows = await execute(
        dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = current_database() AND pid <> pg_backend_pid() AND {where}",
        *args,
    )
    return len(rows)
