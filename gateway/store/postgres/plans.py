"""Running a plan (`gateway.store.plans`) on an asyncpg connection, inside the
caller's transaction."""

from __future__ import annotations

from typing import Any

from gateway.store import queries
from gateway.store.plans import (
    Execute,
    ExecuteMany,
    Fetch,
    FetchRow,
    FetchValue,
    Lock,
    Plan,
    Step,
    T,
)
from gateway.store.postgres.db import Conn


async def step(conn: Conn, s: Step) -> Any:
    if isinstance(s, Lock):
        text = queries.load("postgres").get(s.query)
        if text is not None:
            await conn.execute(text, *s.args)
        return None
    if isinstance(s, ExecuteMany):
        text = queries.get("postgres", s.query)
        await conn.executemany(text, s.rows)
        return None
    text = queries.text("postgres", s.query, s.states)
    if isinstance(s, Fetch):
        return await conn.fetch(text, *s.args)
    if isinstance(s, FetchRow):
        return await conn.fetchrow(text, *s.args)
    if isinstance(s, FetchValue):
        return await conn.fetchval(text, *s.args)
    assert isinstance(s, Execute)
    status = await conn.execute(text, *s.args)
    # asyncpg answers with the command tag, e.g. "UPDATE 3" or "INSERT 0 3".
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def run(conn: Conn, plan: Plan[T]) -> T:
    result: Any = None
    try:
        while True:
            result = await step(conn, plan.send(result))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
