"""Counting deliveries in one state on PostgreSQL (the webhook applier's gauge)."""

from __future__ import annotations

from gateway.lifecycle import state_is
from gateway.schema import Backend
from gateway.store.base import DeliveryState
from gateway.store.postgres.db import Conn


async def count_state(conn: Conn, backend: Backend, state: DeliveryState) -> int:
    n = await conn.fetchval(
        f"SELECT count(*) FROM deliveries WHERE backend = $1 AND {state_is('state', [state])}",
        backend,
    )
    return int(n)
