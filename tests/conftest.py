from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.store import migrations
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.store import pg
from tests.tokens import api_token, entry

TOKEN = api_token("crm")
SHOP_TOKEN = api_token("shop")
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# Every test fails if the gateway logs personal data or a secret (autouse).
pytest_plugins = ["tests.log_guard"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """This test session's own PostgreSQL database, migrated once."""

    async def migrate(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await migrations.apply_postgres(conn)
        finally:
            await conn.close()

    with pg.fresh_database() as url:
        pg.run(migrate(url))
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where `store` keeps its data: a fresh SQLite file, or the session's
    PostgreSQL database emptied for this test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("pg_database")
    pg.truncate(url)
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An open store on each engine, for tests below the API."""
    s: Store = (
        SQLiteStore.from_url(store_url)
        if store_url.startswith("sqlite:///")
        else PostgresStore(store_url)
    )
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{db_path}",
        # crm may do everything; shop is a plain writer, as `app:token` means.
        api_tokens=f"{entry('crm', TOKEN)},{entry('shop', SHOP_TOKEN, '')}",
        ocamba_url="http://127.0.0.1:9",
        omneo_url="http://127.0.0.1:9",
        import_batch_url="http://127.0.0.1:9",
        # The API tests look at deliveries as the API left them.
        dispatcher_enabled=False,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def rows(db_path: Path) -> Callable[[str], list[tuple[Any, ...]]]:
    """Query the store's file directly, as an operator would."""

    def query(sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(db_path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    return query


def count(rows: Callable[[str], list[tuple[Any, ...]]], table: str) -> int:
    return int(rows(f"SELECT COUNT(*) FROM {table}")[0][0])
