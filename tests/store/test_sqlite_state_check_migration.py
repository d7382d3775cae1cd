"""SQLite migration 0011 rebuilds deliveries to add the state CHECK: a file
written before it keeps every row (ids, states, leases, times) and every
index, and the store goes on working from where it was.

The file is written with raw SQL (tests/store/upgrade_fixture.py), not with
today's store code, which writes columns that came after 0011."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.store import migrations
from gateway.store.sqlite import SQLiteStore
from tests.store import upgrade_fixture as old

CHECK_VERSION = 11


def snapshot(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT * FROM deliveries ORDER BY id").fetchall()
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
            " AND tbl_name = 'deliveries' ORDER BY name"
        ).fetchall()
    finally:
        conn.close()
    return rows, indexes


def migrate(path: Path, up_to: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        migrations.apply_sqlite(conn, up_to=up_to)
    finally:
        conn.close()


@pytest.mark.anyio
async def test_the_rebuild_keeps_every_row_and_index(tmp_path: Path) -> None:
    path = tmp_path / "before.db"
    now = time.time()
    migrate(path, CHECK_VERSION - 1)
    conn = sqlite3.connect(path, isolation_level=None)
    old.write_sqlite(conn, now)
    conn.close()
    rows, indexes = snapshot(path)
    states = {r[4] for r in rows}
    assert states == {
        "pending", "in_flight", "retrying", "accepted", "confirmed", "dead", "failed"
    }  # fmt: skip

    migrate(path, CHECK_VERSION)
    assert snapshot(path) == (rows, indexes)
    conn = sqlite3.connect(path)
    [(sql,)] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'deliveries'")
    names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "CHECK (state IN (" in sql
    assert "deliveries_rebuilt" not in names

    # The queue carries on from there under every later migration: what was
    # open is claimed (the dead worker's lease has run out), one write per
    # person at a time.
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    try:
        claims = await store.claim("import_batch", 10, "w2", 60)
        people = sorted({w.external_id for w in old.to_send("import_batch")})
        assert sorted(c.external_id for c in claims) == people
    finally:
        await store.close()
