"""The read side of the delivery queue: depth per backend, dead letters and the
operator page's lists, counts by state. (Claiming, recording and replaying
stay in each engine's queue.py; claimed rows become Claims through
gateway.store.pii.open_claims, shared by both.)"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gateway.crypto import Sealer
from gateway.lifecycle import DUE
from gateway.schema import Backend
from gateway.store.base import DeadLetter, DeliveryState, QueueStats
from gateway.store.pii import open_error
from gateway.store.plans import Fetch, FetchValue, Plan


def queue_stats(now: float) -> Plan[list[QueueStats]]:
    rows = yield Fetch("queue_depths")
    return add_lane_rows([], rows, now)


def add_lane_rows(
    stats: list[QueueStats], rows: Iterable[Sequence[Any]], now: float
) -> list[QueueStats]:
    """`stats` with rows of (backend, lane, depth, oldest time) added in, by backend."""
    by_backend = {s.backend: s for s in stats}
    for backend, lane, depth, oldest in rows:
        age = max(0.0, now - float(oldest))
        known = by_backend.setdefault(backend, QueueStats(backend, 0, age))
        known.depth += int(depth)
        known.oldest_age = max(known.oldest_age, age)
        known.lanes[lane] = known.lanes.get(lane, 0) + int(depth)
    return sorted(by_backend.values(), key=lambda s: s.backend)


def _letter(row: Any, sealer: Sealer) -> DeadLetter:
    letter = DeadLetter(*row)
    letter.last_error = open_error(sealer, letter.delivery_id, letter.last_error)
    return letter


def list_deliveries(
    states: list[DeliveryState], backend: Backend | None, limit: int, sealer: Sealer
) -> Plan[list[DeadLetter]]:
    """Oldest first."""
    rows = yield Fetch("list_deliveries", (limit, backend), states=tuple(states))
    return [_letter(r, sealer) for r in rows]


def recent_deliveries(
    state: DeliveryState,
    backend: Backend | None,
    limit: int,
    before_id: int | None,
    sealer: Sealer,
) -> Plan[list[DeadLetter]]:
    """Newest first, a page before `before_id`."""
    args = (limit, backend, before_id)
    if state in DUE:
        # SQLite uses a partial index only when the query repeats its WHERE
        # term; the one index holding `retrying` rows also holds `pending` ones.
        rows = yield Fetch("recent_due_deliveries", args, states=(state,))
    else:
        rows = yield Fetch("recent_deliveries", args, states=(state,))
    return [_letter(r, sealer) for r in rows]


def count_state(backend: Backend, state: DeliveryState) -> Plan[int]:
    n = yield FetchValue("count_state", (backend,), states=(state,))
    return int(n)
