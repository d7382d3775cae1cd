"""The named-query files and the plans that use them."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from gateway.store import queries
from gateway.store.plans import as_list

STEPS = {"Fetch", "FetchRow", "FetchValue", "Execute", "ExecuteMany", "Lock"}
GATEWAY = Path(__file__).resolve().parents[2] / "gateway"


def test_parse_splits_named_queries_and_keeps_their_comments() -> None:
    found = queries.parse(
        "-- a file about things\n"
        "-- name: first\n-- why it exists\nSELECT 1\n\n"
        "-- name: second_one\nSELECT ?1,\n  ?2\n"
    )
    assert found == {"first": "-- why it exists\nSELECT 1", "second_one": "SELECT ?1,\n  ?2"}


@pytest.mark.parametrize(
    "text, problem",
    [
        ("SELECT 1\n-- name: a\nSELECT 2", "before the first"),
        ("-- name: a\nSELECT 1\n-- name: a\nSELECT 2", "defined twice"),
        ("-- name: a\n-- only a comment\n-- name: b\nSELECT 2", "empty"),
    ],
)
def test_parse_refuses_a_malformed_file(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        queries.parse(text, "x.sql")


def test_an_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(queries.QueryNotFound, match="no query named 'no_such_query'"):
        queries.get("sqlite", "no_such_query")


def _names_used_by_plans() -> dict[str, set[str]]:
    """{step kind: query names} for every step built with a literal name in gateway/."""
    used: dict[str, set[str]] = {}
    for path in GATEWAY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in STEPS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                used.setdefault(node.func.id, set()).add(node.args[0].value)
    return used


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_every_query_a_plan_names_exists_in_each_engine(engine: str) -> None:
    used = _names_used_by_plans()
    defined = queries.load(engine)
    needed = set().union(*(names for kind, names in used.items() if kind != "Lock"))
    assert needed, "no plan found: the scan is broken"
    assert sorted(needed - set(defined)) == []


def _string_constants() -> set[str]:
    return {
        node.value
        for path in GATEWAY.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_every_defined_query_is_used() -> None:
    used = _string_constants()
    for engine in ("sqlite", "postgres"):
        assert sorted(set(queries.load(engine)) - used) == [], engine


def test_a_run_time_state_list_is_written_into_the_query() -> None:
    one = queries.text("sqlite", "count_state", ["dead"])
    assert "state = 'dead'" in one and "{in_states}" not in one
    many = queries.text("postgres", "list_deliveries", ["failed", "dead", "dead"])
    assert "d.state IN ('dead', 'failed')" in many


@pytest.mark.parametrize(
    "name, states", [("count_state", []), ("ping", ["dead"]), ("count_state", ["nope"])]
)
def test_states_must_fit_the_query(name: str, states: list[Any]) -> None:
    with pytest.raises(ValueError):
        queries.text("sqlite", name, states)


def test_a_list_column_reads_the_same_from_both_engines() -> None:
    assert as_list('["omneo", "ocamba"]') == as_list(["omneo", "ocamba"]) == ["omneo", "ocamba"]
