from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.store.sqlite import SQLiteStore

TOKEN = "crm-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open SQLite store on a fresh file, for tests below the API."""
    s = SQLiteStore(tmp_path / "store.db")
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
        api_tokens=f"crm:{TOKEN},shop:shop-token",
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
