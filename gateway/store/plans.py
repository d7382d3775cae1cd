"""Store logic written once for both engines, as plans.

A plan is a generator that yields steps (run this named query with these
arguments) and receives each step's result; it returns the operation's result.
It does no I/O itself (the sans-I/O style of h11), so the same plan runs on
SQLite's writer thread (`gateway.store.sqlite.plans.run`, synchronous) and on
an asyncpg connection (`gateway.store.postgres.plans.run`). What differs
between the engines is the text of each named query, kept in `.sql` files
beside each engine (`queries.load`), not the logic around it.

Arguments are positional and numbered the same in both dialects: `$1` in
PostgreSQL is `?1` in SQLite. A list argument is bound as an array in
PostgreSQL and as JSON text in SQLite (read it there with `json_each(?1)`).
Rows are read by position, which both drivers' rows allow. A list a query
returns (a column of an array type in PostgreSQL) comes as JSON text from
SQLite: plans read such a column with `as_list`.

A list of delivery states chosen at run time (`states=`) is not bound but
written into the query's `{in_states}` (`= 'dead'`, `IN ('dead', 'failed')`):
a planner uses a partial index only when the query's own text implies the
index's predicate (see gateway/lifecycle.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from gateway.lifecycle import DeliveryState

T = TypeVar("T")
Row: TypeAlias = Sequence[Any]


@dataclass(frozen=True, slots=True)
class Fetch:
    """All rows of a query (a list of rows)."""

    query: str
    args: tuple[Any, ...] = ()
    states: tuple[DeliveryState, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchRow:
    """The first row, or None."""

    query: str
    args: tuple[Any, ...] = ()
    states: tuple[DeliveryState, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchValue:
    """The first column of the first row, or None."""

    query: str
    args: tuple[Any, ...] = ()
    states: tuple[DeliveryState, ...] = ()


@dataclass(frozen=True, slots=True)
class Execute:
    """A statement; the result is the number of rows it changed."""

    query: str
    args: tuple[Any, ...] = ()
    states: tuple[DeliveryState, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecuteMany:
    """One statement per argument tuple; no result."""

    query: str
    rows: Sequence[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Lock:
    """A query only some engines need (a row or advisory lock in PostgreSQL,
    where SQLite's one writer already serialises): skipped where the engine's
    query files do not define it. No result."""

    query: str
    args: tuple[Any, ...] = ()


Step: TypeAlias = Fetch | FetchRow | FetchValue | Execute | ExecuteMany | Lock
Plan: TypeAlias = Generator[Step, Any, T]


def lock_key(name: str) -> int:
    """A bigint key for a named lock (pg_advisory_lock), the same in every
    replica and release (Python's hash() is salted per process; PostgreSQL's
    hashtext() is not promised stable across server versions). Plans pass it
    to Lock steps; engines without such locks ignore it."""
    digest = hashlib.blake2b(f"gateway:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def as_list(value: Any) -> list[Any]:
    """A list column: an array from PostgreSQL, JSON text from SQLite."""
    return json.loads(value) if isinstance(value, str) else list(value)
