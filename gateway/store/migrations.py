"""Schema migrations kept as numbered .sql files under `store/<dialect>/migrations/`.

Each file is applied once, in order, and recorded in `schema_migrations`; a file
is never edited after it shipped, a new one is added instead. Dialects:
`sqlite` and `postgres`.
"""

from __future__ import annotations

import sqlite3
import time
from importlib import resources

from gateway.store.base import StoreError
from gateway.store.postgres.db import Conn, advisory_key


class SchemaBehind(StoreError):
    """The database lacks migrations this release needs, and this process was
    told not to apply them (GATEWAY_MIGRATE_ON_START=false)."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(
            "the database schema is behind this release (missing "
            + ", ".join(missing)
            + "); run `gateway migrate` first, or set GATEWAY_MIGRATE_ON_START=true"
        )
        self.missing = missing


def migration_files(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) for each migration of `dialect`, in order."""
    folder = resources.files("gateway.store") / dialect / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def _wanted(dialect: str, up_to: int | None) -> list[tuple[int, str, str]]:
    """The migrations of `dialect` to apply: all of them, or (`up_to`) only
    those numbered `up_to` or lower, which builds the schema as an older
    release left it (the upgrade tests do)."""
    return [m for m in migration_files(dialect) if up_to is None or m[0] <= up_to]


def apply_sqlite(conn: sqlite3.Connection, up_to: int | None = None) -> list[str]:
    """Apply pending migrations (those numbered `up_to` or lower, if given) in
    one transaction; returns the names applied."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, sql in _wanted("sqlite", up_to):
            if version in done:
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, time.time()),
            )
            applied.append(name)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


def _statements(sql: str) -> list[str]:
    # executescript() would commit on its own; splitting keeps the migration and
    # its bookkeeping in one transaction. The .sql files hold no ';' in literals.
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in code.split(";") if s.strip()]


_POSTGRES_LOCK = advisory_key("migrations")
_POSTGRES_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)"
)


async def apply_postgres(conn: Conn, up_to: int | None = None) -> list[str]:
    """Apply pending migrations (those numbered `up_to` or lower, if given) in
    one transaction (PostgreSQL's DDL is transactional); returns the names applied."""
    async with conn.transaction():
        # Replicas that start together queue here: the first applies, the next
        # ones then find nothing left to do. The lock comes before anything
        # else, as even CREATE TABLE IF NOT EXISTS fails when two sessions run
        # it at once. It is released at commit, also when a migration fails.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _POSTGRES_LOCK)
        await conn.execute(_POSTGRES_TABLE)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, sql in _wanted("postgres", up_to):
            if version in done:
                continue
            await conn.execute(sql)  # without arguments: the file's statements run as one script
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                version,
                name,
                time.time(),
            )
            applied.append(name)
    return applied


async def pending_postgres(conn: Conn) -> list[str]:
    """Names of the migrations not applied yet; a database newer than this
    release is fine (migrations only add)."""
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return [name for _, name, _ in migration_files("postgres")]
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [name for version, name, _ in migration_files("postgres") if version not in done]
