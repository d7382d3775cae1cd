"""Schema migrations kept as numbered .sql files under `store/sql/<dialect>/`.

Each file is applied once, in order, and recorded in `schema_migrations`; a file
is never edited after it shipped, a new one is added instead.
"""

from __future__ import annotations

import sqlite3
import time
from importlib import resources


def migration_files(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) for each migration of `dialect`, in order."""
    folder = resources.files("gateway.store") / "sql" / dialect
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def apply_sqlite(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in one transaction; returns the names applied."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, sql in migration_files("sqlite"):
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
