"""What both stores do the same way: every operation written once as a plan
(gateway/store/ops/), run by the engine through `_plan`.

`SQLiteStore` and `PostgresStore` subclass `StoreCore` and keep only what
truly differs: connections and transactions, accept, claim, record, replay,
and the signals between processes.
"""

from __future__ import annotations

import abc
from typing import Literal

from gateway.crypto import Sealer
from gateway.schema import Backend
from gateway.store.base import AppliedEvent, SavedEvent, WebhookEvent
from gateway.store.ops import sessions, webhooks
from gateway.store.plans import Plan, T

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

    @abc.abstractmethod
    async def _plan(self, what: str, plan: Plan[T], access: Access) -> T:
        """Run `plan` on a connection of this engine; `what` names it in errors."""

    # -- webhooks (ops/webhooks.py) ---------------------------------------------

    async def save_webhook(self, event: WebhookEvent) -> SavedEvent:
        return await self._plan(
            "saving a webhook", webhooks.save_webhook(event, self.sealer), "write"
        )

    async def apply_webhooks(self, source: Backend, limit: int = 100) -> list[AppliedEvent]:
        return await self._plan(
            "applying webhooks", webhooks.apply_webhooks(source, limit), "transaction"
        )

    async def mark_unconfirmed(self, backend: Backend, accepted_before: float) -> int:
        return await self._plan(
            "marking unconfirmed", webhooks.mark_unconfirmed(backend, accepted_before), "write"
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
