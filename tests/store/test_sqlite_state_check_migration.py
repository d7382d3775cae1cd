"""SQLite migration 0011 rebuilds deliveries to add the state CHECK: a file
written before it keeps every row (ids, states, leases, times) and every
index, and the store goes on working from where it was."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.schema import Backend, NormalizedProfile
from gateway.store import migrations
from gateway.store.base import DeliveryResult, NewRequest
from gateway.store.sqlite import SQLiteStore

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


async def fill(store: SQLiteStore) -> None:
    """One delivery in each state the previous schema could hold."""
    targets: list[Backend] = ["omneo", "ocamba", "import_batch"]
    people = [NormalizedProfile(external_id=f"p{i}", email=f"p{i}@x.test") for i in range(6)]
    await store.accept(NewRequest("r1", "crm", targets, people, time.time()))
    claims = await store.claim("omneo", 6, "w", 60)
    results = [
        DeliveryResult(claims[0].delivery_id, "accepted", match_key="p0@x.test"),
        DeliveryResult(claims[1].delivery_id, "confirmed", backend_id="o-1"),
        DeliveryResult(claims[2].delivery_id, "retrying", "503", next_attempt_at=time.time() + 60),
        DeliveryResult(claims[3].delivery_id, "dead", "gave up"),
        DeliveryResult(claims[4].delivery_id, "failed", "refused"),
        DeliveryResult(claims[5].delivery_id, "accepted", match_key="p5@x.test"),
    ]
    assert await store.record("w", results) == 6
    assert await store.mark_unconfirmed("omneo", time.time() + 1) == 2
    await store.claim("ocamba", 2, "w", 60)  # in flight, leased
    await store.erase_profile("p5")  # its ocamba and import_batch deliveries: erased


@pytest.mark.anyio
async def test_the_rebuild_keeps_every_row_and_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "before.db"
    every = migrations.migration_files
    monkeypatch.setattr(
        migrations,
        "migration_files",
        lambda dialect: [m for m in every(dialect) if m[0] < CHECK_VERSION],
    )
    old = SQLiteStore.from_url(f"sqlite:///{path}")
    await old.open()
    # Today's store code expands requests through a table added after 0011;
    # it is empty again once fill() has claimed, and goes before the upgrade.
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE expand_queue (seq INTEGER PRIMARY KEY, request_id TEXT)")
    await fill(old)
    await old.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM expand_queue").fetchone() == (0,)
        conn.execute("DROP TABLE expand_queue")
    conn.close()
    rows, indexes = snapshot(path)
    states = {r[4] for r in rows}
    assert states == {
        "pending", "in_flight", "retrying", "confirmed", "dead", "failed", "unconfirmed", "erased"
    }  # fmt: skip

    monkeypatch.setattr(
        migrations,
        "migration_files",
        lambda dialect: [m for m in every(dialect) if m[0] <= CHECK_VERSION],
    )
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    await store.close()
    assert snapshot(path) == (rows, indexes)
    monkeypatch.setattr(migrations, "migration_files", every)
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    try:
        conn = sqlite3.connect(path)
        [(sql,)] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'deliveries'")
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
        conn.close()
        assert "CHECK (state IN (" in sql
        assert "deliveries_rebuilt" not in names
        # The queue carries on: the pending deliveries are claimed, not the
        # erased ones nor those still leased (ocamba's p0 and p1).
        claims = await store.claim("import_batch", 10, "w2", 60)
        assert sorted(c.external_id for c in claims) == ["p0", "p1", "p2", "p3", "p4"]
        claims = await store.claim("ocamba", 10, "w2", 60)
        assert sorted(c.external_id for c in claims) == ["p2", "p3", "p4"]
    finally:
        await store.close()
