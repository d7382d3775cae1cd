"""Fixtures for the PostgreSQL-only store tests: two replicas on one database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.store.postgres import PostgresStore
from tests.store import pg


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    pg.truncate(pg_database)
    return pg_database


@pytest.fixture
async def replicas(pg_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores with a pool each on one database: two gateway processes."""
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()
