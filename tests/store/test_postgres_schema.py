"""PostgreSQL migrations, choosing the engine from the URL, and failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.schema import NormalizedProfile
from gateway.store import migrations
from gateway.store.base import NewRequest, StoreError
from gateway.store.factory import store_from_settings
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.store import pg

pytestmark = pytest.mark.anyio

FILES = [(version, name) for version, name, _ in migrations.migration_files("postgres")]


async def test_three_replicas_starting_at_once_apply_each_migration_once() -> None:
    assert [name for _, name in FILES][:1] == ["0001_init.sql"]
    with pg.fresh_database("gateway_migrate") as url:
        stores = [PostgresStore(url) for _ in range(3)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            rows = await pg.execute(url, "SELECT version, name FROM schema_migrations ORDER BY 1")
            assert [tuple(r) for r in rows] == FILES
            await stores[2].accept(
                NewRequest("r1", "crm", ["omneo"], [NormalizedProfile("x")], received_at=0.0)
            )
            assert len(await stores[0].claim("omneo", 10, "w", 60)) == 1
        finally:
            for s in stores:
                await s.close()


async def test_without_migrate_on_start_a_schema_that_is_behind_is_refused() -> None:
    with pg.fresh_database("gateway_migrate") as url:
        settings = Settings(database_url=url, migrate_on_start=False)
        lazy = store_from_settings(settings)
        assert isinstance(lazy, PostgresStore)
        with pytest.raises(migrations.SchemaBehind, match="run `gateway migrate`") as behind:
            await lazy.open()
        assert behind.value.missing == [name for _, name in FILES]
        tables = await pg.execute(url, "SELECT to_regclass('deliveries') IS NULL")
        assert tables[0][0]  # it changed nothing

        migrating = PostgresStore(url)  # what `gateway migrate` does
        await migrating.open()
        await migrating.close()
        await lazy.open()  # now up to date
        await lazy.ping()
        await lazy.close()


def test_the_url_picks_the_engine(tmp_path: Path) -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        assert isinstance(store_from_settings(Settings(database_url=url)), PostgresStore)
    sqlite = store_from_settings(Settings(database_url=f"sqlite:///{tmp_path}/g.db"))
    assert isinstance(sqlite, SQLiteStore)
    with pytest.raises(ValueError, match="postgresql://"):
        store_from_settings(Settings(database_url="mysql://u@h/db"))


async def test_an_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="connecting to PostgreSQL"):
        await PostgresStore("postgresql://postgres@127.0.0.1:1/nowhere").open()


async def test_a_write_to_a_database_that_went_away_is_a_store_error() -> None:
    with pg.fresh_database("gateway_gone") as url:
        store = PostgresStore(url)
        await store.open()
        try:
            await pg.execute(pg.ADMIN_DSN, f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
            with pytest.raises(StoreError):
                await store.accept(
                    NewRequest("r1", "crm", ["omneo"], [NormalizedProfile("x")], received_at=0.0)
                )
            with pytest.raises(StoreError):
                await store.claim("omneo", 10, "w", 60)
        finally:
            await store.close()
