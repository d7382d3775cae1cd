"""Applies stored Omneo webhooks and turns late confirmations into `unconfirmed`.

Runs beside the dispatcher. Work is driven by the store (events in state
`received`), so events stored just before a crash are applied after restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.store.base import Store, StoreError

log = logging.getLogger("gateway.webhooks")


class WebhookApplier:
    def __init__(
        self, store: Store, settings: Settings, metrics: Metrics, *, poll_interval: float = 1.0
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-applier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def notify(self) -> None:
        self._wake.set()

    async def run_once(self) -> None:
        """Apply every waiting event, then sweep for overdue confirmations."""
        while True:
            applied = await self.store.apply_webhooks("omneo")
            for ev in applied:
                self.metrics.webhooks.labels(ev.event, ev.result).inc()
                for c in ev.confirmations:
                    self.metrics.confirmation_lag.observe(c.lag)
                self.metrics.deliveries.labels("omneo", "confirmed").inc(len(ev.confirmations))
            if len(applied) < 100:
                break
        cutoff = time.time() - self.settings.omneo_confirm_timeout
        late = await self.store.mark_unconfirmed("omneo", cutoff)
        if late:
            log.warning("omneo deliveries unconfirmed", extra={"count": late})
        self.metrics.unconfirmed.set(await self.store.count_state("omneo", "unconfirmed"))

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except StoreError:
                log.exception("applying webhooks failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
