"""The PostgreSQL engine: a connection pool shared by replicas, row locks and
advisory locks where SQLite has one writer.

Only what differs from SQLite lives here: connections and locking, accept,
claim, record and replay. The rest is `gateway.store`'s engine-free logic.
"""

from gateway.store.postgres.store import URL_PREFIXES, PostgresStore

__all__ = ["URL_PREFIXES", "PostgresStore"]
