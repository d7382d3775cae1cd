"""The delivery-state lists written out in the engines' named queries
(gateway/store/<engine>/queries/*.sql) agree with gateway/lifecycle.py.

The .sql files hold literal lists (a planner uses a partial index only when the
query's own text implies the index's predicate); each list of delivery states
says which lifecycle group it is, with `-- lifecycle.GROUP` on its line, and
must be that group's SQL form letter for letter: the one-place rule holds."""

from __future__ import annotations

import re

import pytest

from gateway import lifecycle
from gateway.store import queries

LIST = re.compile(r"\((?:'[a-z_]+'(?:, )?)+\)")
MARK = re.compile(r"-- lifecycle\.([A-Z_]+)\b")
ONE = re.compile(r"state\s*(?:=|!=)\s*'([a-z_]+)'")


def _lines(engine: str) -> list[tuple[str, str]]:
    return [
        (name, line) for name, text in queries.load(engine).items() for line in text.splitlines()
    ]


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_every_state_list_is_a_lifecycle_group(engine: str) -> None:
    checked = 0
    for name, line in _lines(engine):
        for found in LIST.findall(line.split("--", 1)[0]):
            states = re.findall(r"'([a-z_]+)'", found)
            if not set(states) <= set(lifecycle.STATES):
                continue  # another table's states (webhook events)
            mark = MARK.search(line)
            assert mark, f"{engine} {name}: {found} does not say its lifecycle group"
            group = getattr(lifecycle, mark.group(1))
            assert found == lifecycle.sql_list(group), f"{engine} {name}: {found}"
            checked += 1
    assert checked, "no state list found: the scan is broken"


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_every_single_state_named_is_a_delivery_or_event_state(engine: str) -> None:
    events = {"received", "applied", "unmatched", "stale", "invalid"}
    for name, line in _lines(engine):
        for state in ONE.findall(line):
            assert state in set(lifecycle.STATES) | events, f"{engine} {name}: {state}"
