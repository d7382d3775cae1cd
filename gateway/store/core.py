"""What both stores do the same way: every operation written once as a plan
(gateway/store/ops/), run by the engine through `_plan`.

`SQLiteStore` and `PostgresStore` subclass `StoreCore` and keep only what
truly differs: connections and transactions, accept, claim, record, replay,
and the signals between processes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Literal

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.crypto import Sealer
from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import (
    AppliedEvent,
    DeadLetter,
    DeliveryState,
    Erasure,
    ProfileView,
    PurgeResult,
    QueueStats,
    RequestView,
    SavedEvent,
    SealedTable,
    SealStatus,
    WebhookEvent,
)
from gateway.store.expand import backlog, expand
from gateway.store.ops import (
    deliveries,
    erasure,
    keys,
    retention,
    sent_fields,
    sessions,
    views,
    webhooks,
)
from gateway.store.pii import SPAN
from gateway.store.plans import FetchValue, Plan, T

Access = Literal["read", "snapshot", "write", "transaction"]
"""How a plan runs.

read:        reads, each statement on its own (SQLite: a reader connection;
             PostgreSQL: a pooled connection, no transaction).
snapshot:    reads that must agree with each other (PostgreSQL: one
             REPEATABLE READ, read-only transaction).
write:       writes, each statement atomic on its own (PostgreSQL: no
             BEGIN/COMMIT round trips; SQLite: a job of the writer thread).
transaction: writes that commit together (PostgreSQL: one transaction).
"""


class StoreCore(abc.ABC):
    sealer: Sealer
    # Where every time the store stamps or compares comes from; tests give
    # the dispatcher and the store one FakeClock.
    clock: Clock = SYSTEM_CLOCK

    @abc.abstractmethod
    async def _plan(self, what: str, plan: Plan[T], access: Access) -> T:
        """Run `plan` on a connection of this engine; `what` names it in errors."""

    @abc.abstractmethod
    async def _payloads_removed(self) -> None:
        """After payloads were removed or rewritten: where an engine keeps old
        page images around (SQLite's WAL), it lets them go now."""

    async def ping(self) -> None:
        await self._plan("ping", _ping(), "read")

    # -- the status endpoints (ops/views.py) --------------------------------------

    async def get_request(self, request_id: str) -> RequestView | None:
        return await self._plan(
            "store read", views.get_request(request_id, self.sealer), "snapshot"
        )

    async def sent_fields(
        self, backend: Backend, external_ids: list[str]
    ) -> dict[str, dict[str, str]]:
        return await self._plan(
            "store read", sent_fields.sent_fields(backend, external_ids), "read"
        )

    async def get_profile(self, external_id: str) -> ProfileView | None:
        return await self._plan(
            "store read", views.get_profile(external_id, self.sealer), "snapshot"
        )

    # -- the queue's read side (ops/deliveries.py) ---------------------------------

    async def expand(self) -> int:
        return await self._plan("expand", expand(self.clock.now()), "transaction")

    async def queue_stats(self) -> list[QueueStats]:
        return await self._plan("queue stats", _with_backlog(self.clock.now()), "snapshot")

    async def list_deliveries(
        self, states: list[DeliveryState], backend: Backend | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        return await self._plan(
            "store read",
            deliveries.list_deliveries(states, backend, limit, self.sealer),
            "read",
        )

    async def recent_deliveries(
        self,
        state: DeliveryState,
        backend: Backend | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[DeadLetter]:
        return await self._plan(
            "store read",
            deliveries.recent_deliveries(state, backend, limit, before_id, self.sealer),
            "read",
        )

    async def count_state(self, backend: Backend, state: DeliveryState) -> int:
        return await self._plan("store read", deliveries.count_state(backend, state), "read")

    # -- webhooks (ops/webhooks.py) ---------------------------------------------

    async def save_webhook(self, event: WebhookEvent) -> SavedEvent:
        return await self._plan(
            "saving a webhook", webhooks.save_webhook(event, self.sealer), "write"
        )

    async def apply_webhooks(self, source: Backend, limit: int = 100) -> list[AppliedEvent]:
        return await self._plan(
            "applying webhooks",
            webhooks.apply_webhooks(source, limit, self.clock.now()),
            "transaction",
        )

    async def mark_unconfirmed(self, backend: Backend, accepted_before: float) -> int:
        return await self._plan(
            "marking unconfirmed",
            webhooks.mark_unconfirmed(backend, accepted_before, self.clock.now()),
            "write",
        )

    # -- the operator page's sessions (ops/sessions.py) --------------------------

    async def add_ui_session(self, id_hash: str, app: str, expires_at: float, now: float) -> None:
        await self._plan(
            "ui session", sessions.add_ui_session(id_hash, app, expires_at, now), "transaction"
        )

    async def ui_session_alive(self, id_hash: str, now: float) -> bool:
        return await self._plan("ui session", sessions.ui_session_alive(id_hash, now), "read")

    async def end_ui_session(self, id_hash: str) -> None:
        await self._plan("ui session", sessions.end_ui_session(id_hash), "write")

    async def end_all_ui_sessions(self) -> int:
        return await self._plan("ui session", sessions.end_all_ui_sessions(), "write")

    # -- key rotation (ops/keys.py) -----------------------------------------------

    async def seal_status(self) -> SealStatus:
        return await self._plan("store read", keys.seal_status(self.sealer), "snapshot")

    async def reseal(self, table: SealedTable, after_id: int, span: int) -> tuple[int, int | None]:
        return await self._plan(
            "resealing", keys.reseal_step(self.sealer, table, after_id, span), "transaction"
        )

    async def retag(
        self, match_key_of: Callable[[NormalizedProfile], str | None], after_id: int, span: int
    ) -> tuple[int, int | None]:
        return await self._plan(
            "re-indexing match keys",
            keys.retag_step(self.sealer, match_key_of, after_id, span),
            "transaction",
        )

    async def retire_keys(self) -> list[str]:
        retired = await self._plan("retiring keys", keys.retire_keys(self.sealer), "transaction")
        # The last step of a rotation: the old values' page images go too.
        await self._payloads_removed()
        return retired

    # -- erasure and retention (ops/erasure.py, ops/retention.py) -------------------

    async def erase_profile(self, external_id: str) -> Erasure | None:
        erased = await self._plan(
            "erasing a profile",
            erasure.erase(external_id, self.sealer, self.clock.now()),
            "transaction",
        )
        await self._payloads_removed()
        return erased

    async def purge(self, cutoff: float) -> PurgeResult:
        """A span at a time, each step a transaction of its own."""
        writes = events = 0
        write_after: int | None = 0
        event_after: int | None = 0
        while write_after is not None or event_after is not None:
            step, write_after, event_after = await self._plan(
                "purging payloads",
                retention.purge_step(cutoff, write_after, event_after, SPAN, self.clock.now()),
                "transaction",
            )
            writes += step.writes
            events += step.webhook_events
        keys_removed = 0
        while True:
            removed = await self._plan(
                "purging idempotency keys", retention.purge_keys_step(cutoff, SPAN), "transaction"
            )
            keys_removed += removed
            if removed < SPAN:
                break
        if writes or events or keys_removed:
            await self._payloads_removed()
        return PurgeResult(writes=writes, webhook_events=events, idempotency_keys=keys_removed)


def _ping() -> Plan[None]:
    yield FetchValue("ping")


def _with_backlog(now: float) -> Plan[list[QueueStats]]:
    """Open deliveries, plus those expand has not made yet, in one snapshot."""
    stats = yield from deliveries.queue_stats(now)
    waiting = yield from backlog()
    return deliveries.add_lane_rows(stats, waiting, now)
