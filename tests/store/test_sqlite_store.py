"""What only the SQLite store does: WAL, group commit, accept_many."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from gateway.schema import NormalizedProfile
from gateway.store import migrations
from gateway.store.base import AcceptResult, IdempotencyConflict, NewRequest
from gateway.store.sqlite import SQLiteStore, connect
from gateway.store.sqlite.accept import accept_many


def request(
    rid: str, *ids: str, key: str | None = None, body_hash: str | None = None
) -> NewRequest:
    return NewRequest(
        request_id=rid,
        app="crm",
        targets=["omneo"],
        profiles=[NormalizedProfile(external_id=i) for i in ids],
        received_at=time.time(),
        idempotency_key=key,
        body_hash=body_hash,
    )


@pytest.mark.anyio
async def test_migrations_apply_once(tmp_path: Path) -> None:
    for _ in range(2):
        store = SQLiteStore(tmp_path / "g.db")
        await store.open()
        await store.close()
    conn = sqlite3.connect(tmp_path / "g.db")
    files = [(version, name) for version, name, _ in migrations.migration_files("sqlite")]
    assert files[:2] == [(1, "0001_init.sql"), (2, "0002_webhooks.sql")]
    assert conn.execute("SELECT version, name FROM schema_migrations").fetchall() == files
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.anyio
async def test_write_path_batches_commits_under_concurrency(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    await store.open()
    try:
        await asyncio.gather(*(store.accept(request(f"r{i}", f"p{i}")) for i in range(500)))
        assert store.commits < 500 / 2
        view = await store.get_profile("p499")
        assert view is not None and view.backends["omneo"].state == "pending"
    finally:
        await store.close()


@pytest.mark.anyio
async def test_the_same_key_twice_in_one_commit_is_settled_in_arrival_order(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    await store.open()
    try:
        same = await asyncio.gather(
            store.accept(request("r1", "a", key="k", body_hash="h")),
            store.accept(request("r2", "a", key="k", body_hash="h")),
            store.accept(request("r3", "b", key="other", body_hash="x")),
            store.accept(request("r4", "b", key="other", body_hash="y")),
            return_exceptions=True,
        )
        first, replay, third, conflict = same
        assert isinstance(first, AcceptResult) and not first.replayed
        assert isinstance(replay, AcceptResult) and replay.replayed
        assert replay.request_id == "r1"
        assert isinstance(third, AcceptResult) and third.request_id == "r3"
        assert isinstance(conflict, IdempotencyConflict) and conflict.request_id == "r3"
        assert await store.get_request("r2") is None
        assert await store.get_request("r4") is None
    finally:
        await store.close()


def test_accept_many_resolves_keys_repeated_within_one_commit(tmp_path: Path) -> None:
    conn = connect(tmp_path / "g.db")
    migrations.apply_sqlite(conn)
    conn.execute("BEGIN IMMEDIATE")
    outcomes = accept_many(
        conn,
        [
            request("r1", "a", key="k", body_hash="h"),
            request("r2", "a", key="k", body_hash="h"),
            request("r3", "b", key="k", body_hash="other"),
        ],
    )
    conn.execute("COMMIT")
    assert outcomes[0] == AcceptResult("r1", 1, ["omneo"])
    assert outcomes[1] == AcceptResult("r1", 1, ["omneo"], replayed=True)
    assert isinstance(outcomes[2], IdempotencyConflict)
    assert conn.execute("SELECT id FROM requests").fetchall() == [("r1",)]
    # The deliveries come later, from expand; the request is queued for it once.
    assert conn.execute("SELECT COUNT(*) FROM expand_queue").fetchone() == (1,)
    assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone() == (0,)


@pytest.mark.anyio
async def test_the_database_file_and_its_wal_are_readable_by_their_owner_only(
    tmp_path: Path,
) -> None:
    fresh = tmp_path / "fresh.db"
    store = SQLiteStore(fresh)
    await store.open()
    try:
        await store.accept(
            NewRequest("r1", "crm", ["omneo"], [NormalizedProfile(external_id="a")], time.time())
        )
        modes = _modes(tmp_path, "fresh.db*")
        assert set(modes) >= {"fresh.db", "fresh.db-wal", "fresh.db-shm"}
        assert modes == dict.fromkeys(modes, 0o600)
    finally:
        await store.close()
    # A file made before (0644) is tightened when the store opens it.
    older = tmp_path / "older.db"
    _make(older, 0o644)
    store = SQLiteStore(older)
    await store.open()
    await store.close()
    assert _modes(tmp_path, "older.db") == {"older.db": 0o600}


def _modes(folder: Path, pattern: str) -> dict[str, int]:
    return {f.name: stat.S_IMODE(f.stat().st_mode) for f in folder.glob(pattern)}


def _make(path: Path, mode: int) -> None:
    path.touch()
    path.chmod(mode)


def test_events_stored_under_both_names_before_migration_6_are_all_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = connect(tmp_path / "old.db")
    every = migrations.migration_files("sqlite")
    with monkeypatch.context() as m:
        m.setattr(migrations, "migration_files", lambda dialect: [f for f in every if f[0] < 6])
        migrations.apply_sqlite(conn)
    for event in ("profile.created", "profile.updated", "profile.created"):
        conn.execute(
            "INSERT OR IGNORE INTO webhook_events (source, event, body_hash, body, received_at)"
            " VALUES ('omneo', ?, 'h1', x'7b7d', 1.0)",
            (event,),
        )
    assert migrations.apply_sqlite(conn) == [n for v, n, _ in every if v >= 6]
    rows = conn.execute("SELECT id, event, dedup_key FROM webhook_events ORDER BY id").fetchall()
    assert rows == [(1, "profile.created", "h1"), (2, "profile.updated", None)]
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO webhook_events (source, event, body_hash, dedup_key, body, received_at)"
            " VALUES ('omneo', 'profile.other', 'h1', 'h1', x'7b7d', 1.0)"
        )
    conn.close()
