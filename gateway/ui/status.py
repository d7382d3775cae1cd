"""Per-backend health and the recent failures, collected for the operator page.

Narrow inputs: the store (queue, counts, recent failures), and this process's
circuit breakers and pacers when it runs a dispatcher (else the circuit is
`unknown` and the rate limit `null`: an API-only replica cannot know them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from gateway.backends.transport.pacing import FixedWindowPacer, Headroom
from gateway.dispatch.breaker import CircuitBreaker
from gateway.lifecycle import FAILING, REPLAYABLE
from gateway.logs import redact
from gateway.schema import Backend
from gateway.store.base import DeadLetter, DeliveryState, Store
from gateway.ui.rates import ErrorRatio

Circuit = Literal["closed", "half_open", "open", "unknown"]
# What the counts and the failure list look at: states that need a person or time.
# Counted: the replayable ones, in the order the unpacking below expects.
COUNTED = REPLAYABLE
assert COUNTED == ("dead", "failed", "unconfirmed")
RECENT_FAILURES = 20


class BackendStatus(msgspec.Struct):
    backend: Backend
    circuit: Circuit
    # Share of this process's delivery attempts in the window that ended
    # `retry`, `failed` or `dead`; null when none ended (or no dispatcher runs).
    error_ratio: float | None
    outcomes: int  # delivery attempts ended in the window
    rate_limit: Headroom | None  # null: no rate limit, or no dispatcher here
    queue_depth: int  # pending, retrying or in flight
    queue_bulk: int  # of which in the bulk lane (a backfill)
    oldest_pending_seconds: float
    dead: int
    failed: int
    unconfirmed: int


class DeliveryRow(msgspec.Struct):
    delivery_id: int
    external_id: str
    backend: Backend
    state: DeliveryState
    attempts: int
    last_error: str | None  # emails and phone numbers masked, as in the logs
    updated_at: float


class Status(msgspec.Struct):
    generated_at: float
    dispatcher: bool  # whether this process sends (circuit, rate limit, error ratio)
    error_window_seconds: float
    backends: list[BackendStatus]
    recent_failures: list[DeliveryRow]


def row(letter: DeadLetter) -> DeliveryRow:
    """A delivery as the page shows it: a backend's error text can quote the
    profile it refused, so it is masked like a log line."""
    return DeliveryRow(
        delivery_id=letter.delivery_id,
        external_id=letter.external_id,
        backend=letter.backend,
        state=letter.state,
        attempts=letter.attempts,
        last_error=redact(letter.last_error) if letter.last_error else None,
        updated_at=letter.updated_at,
    )


def _circuit(breaker: CircuitBreaker | None) -> Circuit:
    if breaker is None:
        return "unknown"
    name = breaker.state.name.lower()
    return "half_open" if name == "half_open" else "open" if name == "open" else "closed"


def _rate_limit(pacer: FixedWindowPacer | None) -> Headroom | None:
    if pacer is None:
        return None
    headroom = pacer.headroom()
    return headroom if headroom.windows or headroom.blocked_for > 0 else None


async def collect(
    store: Store,
    backends: Sequence[Backend],
    breakers: Mapping[Backend, CircuitBreaker],
    pacers: Mapping[Backend, FixedWindowPacer],
    ratio: ErrorRatio,
) -> Status:
    queue, counts, failures = await asyncio.gather(
        store.queue_stats(),
        asyncio.gather(*(store.count_state(b, s) for b in backends for s in COUNTED)),
        asyncio.gather(*(store.recent_deliveries(s, limit=RECENT_FAILURES) for s in FAILING)),
    )
    by_backend = {q.backend: q for q in queue}
    covered, ratios = ratio.measure(backends)
    dispatching = bool(breakers)
    rows = []
    for i, backend in enumerate(backends):
        q = by_backend.get(backend)
        dead, failed, unconfirmed = counts[i * len(COUNTED) : (i + 1) * len(COUNTED)]
        error_ratio, outcomes = ratios[backend] if dispatching else (None, 0)
        rows.append(
            BackendStatus(
                backend=backend,
                circuit=_circuit(breakers.get(backend)),
                error_ratio=error_ratio,
                outcomes=outcomes,
                rate_limit=_rate_limit(pacers.get(backend)),
                queue_depth=q.depth if q else 0,
                queue_bulk=q.lanes.get("bulk", 0) if q else 0,
                oldest_pending_seconds=q.oldest_age if q else 0.0,
                dead=dead,
                failed=failed,
                unconfirmed=unconfirmed,
            )
        )
    # Each state's newest, merged: the newest failures overall (by delivery id,
    # which the store's per-state indexes walk cheaply).
    newest = sorted((d for group in failures for d in group), key=lambda d: -d.delivery_id)
    return Status(
        generated_at=time.time(),
        dispatcher=dispatching,
        error_window_seconds=covered,
        backends=rows,
        recent_failures=[row(d) for d in newest[:RECENT_FAILURES]],
    )
