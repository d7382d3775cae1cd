"""The operator page's sessions in PostgreSQL (see gateway/ui/session.py):
every replica reads the same rows, so a sign-out holds on all of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from gateway.store.postgres.db import Conn

T = TypeVar("T")


class PostgresSessions:
    """Mixed into PostgresStore, whose pool it uses."""

    if TYPE_CHECKING:

        async def _run(
            self,
            what: str,
            work: Callable[[Conn], Awaitable[T]],
            mode: Literal["statement", "write", "snapshot"] = "statement",
        ) -> T: ...

    async def add_ui_session(self, id_hash: str, app: str, expires_at: float, now: float) -> None:
        async def run(conn: Conn) -> None:
            # Sign-ins are rare: clearing the expired ones here keeps the table small.
            await conn.execute("DELETE FROM ui_sessions WHERE expires_at <= $1", now)
            await conn.execute(
                "INSERT INTO ui_sessions (id_hash, app, expires_at) VALUES ($1, $2, $3)",
                id_hash,
                app,
                expires_at,
            )

        await self._run("ui session", run, "write")

    async def ui_session_alive(self, id_hash: str, now: float) -> bool:
        found = await self._run(
            "ui session",
            lambda conn: conn.fetchval(
                "SELECT 1 FROM ui_sessions WHERE id_hash = $1 AND expires_at > $2", id_hash, now
            ),
        )
        return found is not None

    async def end_ui_session(self, id_hash: str) -> None:
        await self._run(
            "ui session",
            lambda conn: conn.execute("DELETE FROM ui_sessions WHERE id_hash = $1", id_hash),
        )

    async def end_all_ui_sessions(self) -> int:
        status = await self._run("ui session", lambda conn: conn.execute("DELETE FROM ui_sessions"))
        return int(str(status).rsplit(" ", 1)[-1])
