"""Picks the Store implementation from GATEWAY_DATABASE_URL."""

from __future__ import annotations

from gateway.config import ConfigError, Settings
from gateway.store.base import Store
from gateway.store.postgres import URL_PREFIXES, PostgresStore
from gateway.store.sqlite import SQLiteStore


def store_from_settings(settings: Settings) -> Store:
    url = settings.database_url
    if url.startswith("sqlite:///"):
        return SQLiteStore.from_url(
            url, max_batch=settings.store_batch_max, sealer=settings.sealer()
        )
    if url.startswith(URL_PREFIXES):
        # With migrate_on_start off, open() refuses a schema that is behind
        # rather than run against it; `gateway migrate` brings it up to date.
        return PostgresStore.from_url(
            url,
            migrate=settings.migrate_on_start,
            pool_size=settings.store_pool_size,
            sealer=settings.sealer(),
        )
    raise ConfigError(
        f"GATEWAY_DATABASE_URL {url!r} is not supported; use sqlite:///path/to/file.db"
        " or postgresql://user@host:5432/database"
    )
