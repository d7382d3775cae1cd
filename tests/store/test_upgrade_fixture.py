"""The old-layout fixture (tests/store/upgrade_fixture.py) is what it claims to
be: built with `up_to` it has exactly the old migrations applied, and today's
store, opening it, reads every request, profile, delivery state and backend id
back as the fixture wrote them."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.lifecycle import STATES
from gateway.store import migrations
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.store import pg
from tests.store import upgrade_fixture as old

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
async def upgraded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The old database, opened (and so migrated) by today's store."""
    now = time.time()
    store: Store
    if request.param == "sqlite":
        path = str(tmp_path / "old.db")
        old.build_sqlite(path, now)
        assert old.applied_sqlite(path) == old.old_versions("sqlite")
        store = SQLiteStore(path)
        await store.open()
        assert old.applied_sqlite(path) == old.every_version("sqlite")
        yield store
        await store.close()
        return
    with pg.fresh_database("gateway_upgrade") as url:
        await old.build_postgres(url, now)
        assert await old.applied_postgres(url) == old.old_versions("postgres")
        store = PostgresStore(url)
        await store.open()
        assert await old.applied_postgres(url) == old.every_version("postgres")
        yield store
        await store.close()


def test_the_pinned_old_schemas_are_shipped_migrations() -> None:
    assert max(old.old_versions("sqlite")) == old.SQLITE_PRE_REDESIGN_SCHEMA
    assert max(old.old_versions("postgres")) == old.POSTGRES_PRE_REDESIGN_SCHEMA


def test_up_to_applies_only_the_migrations_up_to_it(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    every = migrations.migration_files("sqlite")
    assert migrations.apply_sqlite(conn, up_to=4) == [n for v, n, _ in every if v <= 4]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "webhook_events" in tables and "encryption_keys" not in tables  # 0002 in, 0005 out
    assert migrations.apply_sqlite(conn, up_to=4) == []
    assert migrations.apply_sqlite(conn) == [n for v, n, _ in every if v > 4]
    conn.close()


async def test_the_old_database_reads_back_through_the_store(upgraded: Store) -> None:
    store = upgraded
    for r in old.REQUESTS:
        view = await store.get_request(r.id)
        assert view is not None, r.id
        assert (view.app, view.targets) == (r.app, list(old.TARGETS))
        writes = [w for w in old.WRITES if w.request_id == r.id]
        assert [(p.external_id, p.position) for p in view.profiles] == [
            (w.external_id, w.position) for w in writes
        ]
        for p, w in zip(view.profiles, writes, strict=True):
            wanted = [d for d in old.DELIVERIES if d.write_id == w.id]
            assert [(d.backend, d.state, d.attempts, d.last_error) for d in p.deliveries] == [
                (d.backend, d.state, d.attempts, d.last_error) for d in wanted
            ]
            assert [d.backend_id for d in p.deliveries] == [
                old.BACKEND_IDS.get((w.external_id, d.backend)) for d in wanted
            ]

    for external_id in {w.external_id for w in old.WRITES}:
        profile = await store.get_profile(external_id)
        assert profile is not None
        latest = max((w for w in old.WRITES if w.external_id == external_id), key=lambda w: w.id)
        assert profile.last_request_id == latest.request_id
        assert profile.payload == "stored"
        assert profile.profile is not None
        assert profile.profile.attributes == {"tier": latest.tier}
        assert profile.profile.email == latest.profile["email"]
        assert profile.backend_ids == {
            b: i for (e, b), i in old.BACKEND_IDS.items() if e == external_id
        }
        states = {b: v.state for b, v in profile.backends.items()}
        assert states == {d.backend: d.state for d in old.DELIVERIES if d.write_id == latest.id}

    listed = await store.list_deliveries(list(STATES), limit=1000)
    assert sorted(
        (x.delivery_id, x.request_id, x.external_id, x.backend, x.state, x.attempts) for x in listed
    ) == sorted(
        (
            d.id,
            old.WRITE[d.write_id].request_id,
            old.WRITE[d.write_id].external_id,
            d.backend,
            d.state,
            d.attempts,
        )
        for d in old.DELIVERIES
    )
