"""The embedded engine: one SQLite file, one writer thread, readers beside it.

Only what differs from PostgreSQL lives here: connections and locking, accept,
claim, record and replay. The rest is `gateway.store`'s engine-free logic.
"""

from gateway.store.sqlite.store import SQLiteStore, connect

__all__ = ["SQLiteStore", "connect"]
