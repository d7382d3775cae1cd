"""What the PostgreSQL store's modules share: error mapping, advisory-lock keys,
the wake-up channel and how dedicated connections are opened."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeAlias

import asyncpg
import asyncpg.pool

from gateway.store.base import StoreError
from gateway.store.plans import lock_key

# The key of a pg_advisory_lock by name (plans name theirs with lock_key too).
advisory_key = lock_key

# A connection of our own or one lent by the pool: the modules take either.
Conn: TypeAlias = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# Every way a database call can fail without it being the caller's fault: the
# server refused (PostgresError, also a dropped connection), the client lost
# the connection (InterfaceError, OSError), or a timeout ran out.
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)

# accept() notifies this channel with each target backend's name; dispatchers
# of every replica LISTEN on it (see postgres_signals).
CHANNEL = "gateway_deliveries"

# Dedicated (non-pool) connections: the server drops a session whose client
# vanished without closing it (a killed host, a cut network) after about
# idle + interval * count seconds, instead of the OS default of two hours, so
# a dead leader's advisory lock is freed in about a minute.
KEEPALIVE = {
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}


@contextlib.contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Turn a database failure into StoreError, which the API answers with 503."""
    try:
        yield
    except DB_ERRORS as exc:
        raise StoreError(f"{what} failed: {exc}") from exc


async def connect(dsn: str, purpose: str) -> asyncpg.Connection:
    """A connection of its own, outside the pool, named for pg_stat_activity."""
    settings = {**KEEPALIVE, "application_name": f"gateway {purpose}"[:63]}
    return await asyncpg.connect(dsn, server_settings=settings, timeout=10)
