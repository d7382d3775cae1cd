"""Counting deliveries in one state on SQLite (the webhook applier's gauge)."""

from __future__ import annotations

import sqlite3

from gateway.lifecycle import state_is
from gateway.schema import Backend
from gateway.store.base import DeliveryState


def count_state(conn: sqlite3.Connection, backend: Backend, state: DeliveryState) -> int:
    (n,) = conn.execute(
        f"SELECT COUNT(*) FROM deliveries WHERE backend = ? AND {state_is('state', [state])}",
        (backend,),
    ).fetchone()
    return int(n)
