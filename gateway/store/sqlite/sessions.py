"""The operator page's sessions in SQLite (see gateway/ui/session.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

T = TypeVar("T")


class SQLiteSessions:
    """Mixed into SQLiteStore, whose writer thread and readers it uses."""

    if TYPE_CHECKING:

        async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T: ...

    async def add_ui_session(self, id_hash: str, app: str, expires_at: float, now: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            # Sign-ins are rare: clearing the expired ones here keeps the table small.
            conn.execute("DELETE FROM ui_sessions WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO ui_sessions (id_hash, app, expires_at) VALUES (?, ?, ?)",
                (id_hash, app, expires_at),
            )

        await self._write(run)

    async def ui_session_alive(self, id_hash: str, now: float) -> bool:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT 1 FROM ui_sessions WHERE id_hash = ? AND expires_at > ?", (id_hash, now)
            ).fetchone()
        )
        return row is not None

    async def end_ui_session(self, id_hash: str) -> None:
        await self._write(
            lambda conn: conn.execute("DELETE FROM ui_sessions WHERE id_hash = ?", (id_hash,))
        )

    async def end_all_ui_sessions(self) -> int:
        return await self._write(lambda conn: conn.execute("DELETE FROM ui_sessions").rowcount)
