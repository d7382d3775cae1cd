"""Retention purge: payloads older than the cutoff, a span of ids a step.

Each step is one short transaction (on SQLite, one job of the writer thread),
so accepted writes never wait long behind maintenance. On PostgreSQL the
candidates are locked (skipping any another transaction holds), then their
deliveries, and the conditions are checked in a later statement (a fresh
snapshot): a replay that committed in between is seen, and its write keeps
its payload. SQLite's one writer needs no locks, so there the candidates'
query is the whole test and the Lock step is not defined.
"""

from __future__ import annotations

from gateway.store.base import PurgeResult
from gateway.store.pii import REMOVED
from gateway.store.plans import Execute, Fetch, FetchValue, Lock, Plan

# What a purged write's deliveries keep of a backend's error text.
PURGED_ERROR = "removed by retention"


def purge_step(
    cutoff: float, write_after: int | None, event_after: int | None, span: int, now: float
) -> Plan[tuple[PurgeResult, int | None, int | None]]:
    """One span of each table not done yet (None: done); returns what it
    removed and where each table goes on (None: past its last row or the cutoff)."""
    writes = events = 0
    if write_after is not None:
        ids = [r[0] for r in (yield Fetch("purge_candidates", (write_after, span, cutoff)))]
        if ids:
            yield Lock("lock_purge_deliveries", (ids,))
            rows = yield Fetch("purge_writes", (ids, REMOVED, now, cutoff))
            purged = [r[0] for r in rows]
            # Their lookup tags go too (a webhook this late confirms nothing
            # useful), and backends' error texts, which may quote the profile.
            yield Execute("purge_delivery_tags", (purged, PURGED_ERROR))
            writes = len(purged)
        received = yield FetchValue("write_received_after", (write_after + span,))
        write_after = _next(write_after + span, received, cutoff)
    if event_after is not None:
        events = yield Execute("purge_events", (REMOVED, now, event_after, span, cutoff))
        received = yield FetchValue("event_received_after", (event_after + span,))
        event_after = _next(event_after + span, received, cutoff)
    return PurgeResult(writes=writes, webhook_events=int(events)), write_after, event_after


def _next(after: int, received: float | None, cutoff: float) -> int | None:
    # Ids grow with arrival time, so the first row past the cutoff ends the walk.
    return after if received is not None and received < cutoff else None


def purge_keys_step(cutoff: float, span: int) -> Plan[int]:
    """Up to `span` Idempotency-Key records older than the cutoff (the caller's
    key may hold an email): a retry that late is not a retry."""
    removed = yield Execute("purge_idempotency_keys", (cutoff, span))
    return int(removed)
