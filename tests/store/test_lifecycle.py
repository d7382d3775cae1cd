"""gateway/gateway/lifecycle.py held against both real schemas: the same states
as the CHECK on deliveries.state, a state outside them refused by both
engines, and the SQL group forms the partial indexes are written with."""

from __future__ import annotations

import re
import sqlite3
import time
import typing
from pathlib import Path

import asyncpg
import pytest

from gateway import lifecycle
from gateway.schema import NormalizedProfile
from gateway.store import migrations
from gateway.store.base import NewRequest
from gateway.store.postgres import PostgresStore
from tests.store import pg


def sqlite_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    migrations.apply_sqlite(conn)
    return conn


def sqlite_check(conn: sqlite3.Connection) -> set[str]:
    [(sql,)] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'deliveries'")
    [states] = re.findall(r"CHECK \(state IN \((.*?)\)\)", sql, re.S)
    return set(re.findall(r"'([a-z_]+)'", states))


async def postgres_check(url: str) -> set[str]:
    [row] = await pg.execute(
        url,
        "SELECT pg_get_constraintdef(c.oid) AS def FROM pg_constraint c"
        " WHERE c.conrelid = 'deliveries'::regclass AND c.contype = 'c'"
        " AND pg_get_constraintdef(c.oid) LIKE '%state%'",
    )
    return set(re.findall(r"'([a-z_]+)'::text", row["def"]))


def test_the_sqlite_check_lists_exactly_the_lifecycle_states(tmp_path: Path) -> None:
    conn = sqlite_db(tmp_path / "fresh.db")
    assert sqlite_check(conn) == set(lifecycle.STATES)


def test_the_postgres_check_lists_exactly_the_lifecycle_states() -> None:
    with pg.fresh_database() as url:

        async def migrate_and_read() -> set[str]:
            conn = await asyncpg.connect(url)
            try:
                await migrations.apply_postgres(conn)
            finally:
                await conn.close()
            return await postgres_check(url)

        assert pg.run(migrate_and_read()) == set(lifecycle.STATES)


# 'retry' is the adapters' word, the likeliest to leak into a state column.
REFUSED = ["retry", "Pending", "cancelled", ""]


def insert_sqlite_delivery(conn: sqlite3.Connection) -> int:
    conn.execute(
        "INSERT INTO requests (id, app, received_at, targets, profile_count)"
        " VALUES ('r1', 'crm', 0, '[\"omneo\"]', 1)"
    )
    conn.execute(
        "INSERT INTO profile_writes (id, request_id, position, external_id, body, received_at)"
        " VALUES (1, 'r1', 0, 'a', x'7b7d', 0)"
    )
    cur = conn.execute(
        "INSERT INTO deliveries (write_id, external_id, backend, next_attempt_at,"
        " created_at, updated_at) VALUES (1, 'a', 'omneo', 0, 0, 0)"
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


@pytest.mark.parametrize("state", REFUSED)
def test_sqlite_refuses_a_state_outside_the_lifecycle(tmp_path: Path, state: str) -> None:
    conn = sqlite_db(tmp_path / "check.db")
    delivery = insert_sqlite_delivery(conn)
    assert conn.execute("SELECT state FROM deliveries").fetchone() == (lifecycle.INITIAL,)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        conn.execute("UPDATE deliveries SET state = ? WHERE id = ?", (state, delivery))
    for allowed in lifecycle.STATES:  # every lifecycle state is accepted
        conn.execute("UPDATE deliveries SET state = ? WHERE id = ?", (allowed, delivery))


@pytest.mark.parametrize("state", REFUSED)
@pytest.mark.anyio
async def test_postgres_refuses_a_state_outside_the_lifecycle(pg_url: str, state: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        await store.accept(
            NewRequest("r1", "crm", ["omneo"], [NormalizedProfile(external_id="a")], time.time())
        )
        assert await store.expand() == 1
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_url)
    try:
        delivery = await conn.fetchval("SELECT id FROM deliveries")
        assert await conn.fetchval("SELECT state FROM deliveries") == lifecycle.INITIAL
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE deliveries SET state = $1 WHERE id = $2", state, delivery)
        for allowed in lifecycle.STATES:
            await conn.execute("UPDATE deliveries SET state = $1 WHERE id = $2", allowed, delivery)
    finally:
        await conn.close()


def test_the_groups_sql_forms_are_the_partial_indexes_predicates(tmp_path: Path) -> None:
    # A group's SQL form must repeat the partial index's term as written, or
    # SQLite stops using the index; this holds the groups to the schema.
    conn = sqlite_db(tmp_path / "indexes.db")
    where = dict(
        conn.execute(
            "SELECT name, substr(sql, instr(sql, 'WHERE state') + 12) FROM sqlite_master"
            " WHERE type = 'index' AND tbl_name = 'deliveries' AND sql LIKE '%WHERE state%'"
        ).fetchall()
    )
    assert where["deliveries_due_lane"] == f"IN {lifecycle.DUE_SQL}"
    assert where["deliveries_open_person"] == f"IN {lifecycle.OPEN_SQL}"
    assert where["deliveries_match"] == f"IN {lifecycle.AWAITING_SQL}"
    assert lifecycle.DUE_SQL == "('pending', 'retrying')"


def test_the_table_the_outcomes_and_the_groups_agree() -> None:
    assert set(lifecycle.TRANSITIONS) == set(lifecycle.STATES)
    assert lifecycle.TERMINAL == ("confirmed", "erased", "unchanged", "merged", "unsupported")
    # A merge carries a write that was still waiting; nothing else is merged.
    assert {s for s in lifecycle.STATES if "merged" in lifecycle.TRANSITIONS[s]} == set(
        lifecycle.DUE
    )
    # Every adapter outcome has a state, and a claimed delivery may move there.
    assert set(lifecycle.OUTCOME_STATE) == set(typing.get_args(lifecycle.OutcomeState))
    for state in [*lifecycle.OUTCOME_STATE.values(), lifecycle.RETRY_EXHAUSTED]:
        assert lifecycle.allowed("in_flight", state)
    # Replay sends again: every replayable state may go back to the start.
    for state in lifecycle.REPLAYABLE:
        assert lifecycle.allowed(state, lifecycle.INITIAL)
    # An erasure cancels exactly the open ones.
    assert {s for s in lifecycle.STATES if "erased" in lifecycle.TRANSITIONS[s]} == set(
        lifecycle.OPEN
    )
    # Nothing goes back to in_flight but through a claim of a due delivery.
    assert {s for s in lifecycle.STATES if "in_flight" in lifecycle.TRANSITIONS[s]} == set(
        lifecycle.DUE
    )
    assert not lifecycle.allowed("confirmed", "pending")
    assert lifecycle.state_is("d.state", ["dead"]) == "d.state = 'dead'"
    assert lifecycle.state_is("state", ["failed", "dead"]) == "state IN ('dead', 'failed')"
    with pytest.raises(ValueError, match="not delivery states"):
        lifecycle.state_is("state", typing.cast(list[lifecycle.DeliveryState], ["retry"]))
