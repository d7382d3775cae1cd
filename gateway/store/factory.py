"""Picks the Store implementation from GATEWAY_DATABASE_URL."""

from __future__ import annotations

from gateway.config import ConfigError, Settings
from gateway.store.base import Store
from gateway.store.sqlite import SQLiteStore


def store_from_settings(settings: Settings) -> Store:
    url = settings.database_url
    if url.startswith("sqlite:///"):
        return SQLiteStore.from_url(url, max_batch=settings.store_batch_max)
    raise ConfigError(
        f"GATEWAY_DATABASE_URL {url!r} is not supported yet; use sqlite:///path/to/file.db"
    )
