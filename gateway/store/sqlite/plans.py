"""Running a plan (`gateway.store.plans`) on a SQLite connection, synchronously,
inside the caller's transaction."""

from __future__ import annotations

import json
import sqlite3
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


def _bind(args: tuple[Any, ...]) -> tuple[Any, ...]:
    # SQLite has no arrays: a list travels as JSON text, read with json_each().
    return tuple(json.dumps(a) if isinstance(a, list | tuple) else a for a in args)


def step(conn: sqlite3.Connection, s: Step) -> Any:
    if isinstance(s, Lock):
        text = queries.load("sqlite").get(s.query)
        if text is not None:
            conn.execute(text, _bind(s.args))
        return None
    if isinstance(s, ExecuteMany):
        text = queries.get("sqlite", s.query)
        conn.executemany(text, [_bind(r) for r in s.rows])
        return None
    text = queries.text("sqlite", s.query, s.states)
    cur = conn.execute(text, _bind(s.args))
    if isinstance(s, Fetch):
        return cur.fetchall()
    if isinstance(s, FetchRow):
        return cur.fetchone()
    if isinstance(s, FetchValue):
        row = cur.fetchone()
        return None if row is None else row[0]
    assert isinstance(s, Execute)
    return cur.rowcount


def run(conn: sqlite3.Connection, plan: Plan[T]) -> T:
    result: Any = None
    try:
        while True:
            result = step(conn, plan.send(result))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
