"""Named queries kept in `.sql` files beside each engine, as procrastinate does.

Each file under `gateway/store/<engine>/queries/` holds several queries, each
introduced by a line `-- name: <query_name>`; the comment lines right after it
say what the query is for, and the query runs to the next `-- name:` line.
Names are unique across an engine's files, so a plan names a query without
knowing which file holds it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib import resources

from gateway.lifecycle import DeliveryState, sql_list, sql_value

_HEADER = re.compile(r"^-- name: *([a-z_][a-z0-9_]*) *$", re.MULTILINE)


class QueryNotFound(KeyError):
    pass


def parse(text: str, source: str = "<sql>") -> dict[str, str]:
    """{name: query} of one file; text before the first header must be comments."""
    parts = _HEADER.split(text)
    preamble, found = parts[0], {}
    if any(line.strip() and not line.lstrip().startswith("--") for line in preamble.splitlines()):
        raise ValueError(f"{source}: SQL before the first '-- name:' line")
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"{source}: query {name!r} defined twice")
        query = body.strip()
        if not query or all(line.lstrip().startswith("--") for line in query.splitlines()):
            raise ValueError(f"{source}: query {name!r} is empty")
        found[name] = query
    return found


@cache
def load(engine: str) -> dict[str, str]:
    """Every named query of `engine` ('sqlite' or 'postgres')."""
    folder = resources.files("gateway.store") / engine / "queries"
    queries: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, query in parse(entry.read_text(encoding="utf-8"), entry.name).items():
            if name in queries:
                raise ValueError(f"{engine}: query {name!r} defined in two files")
            queries[name] = query
    return queries


def get(engine: str, name: str) -> str:
    try:
        return load(engine)[name]
    except KeyError:
        raise QueryNotFound(f"{engine} has no query named {name!r}") from None


STATES_MARK = "{in_states}"


def text(engine: str, name: str, states: Sequence[DeliveryState] = ()) -> str:
    """The query `name`, its `{in_states}` written out for `states`: `= 'x'` for
    one state (SQLite matches a partial index on `=` only, not on an IN list),
    else `IN (...)`. Safe to inline: sql_list refuses anything not a state."""
    query = get(engine, name)
    if (STATES_MARK in query) != bool(states):
        raise ValueError(f"{engine} {name}: states {list(states)} for {STATES_MARK!r}")
    if not states:
        return query
    unique = tuple(sorted(set(states)))
    test = f"= {sql_value(unique[0])}" if len(unique) == 1 else f"IN {sql_list(unique)}"
    return query.replace(STATES_MARK, test)
