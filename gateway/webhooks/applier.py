"""Applies stored Omneo webhooks and turns late confirmations into `unconfirmed`.

Runs beside the dispatcher. Work is driven by the store (events in state
`received`), so events stored just before a crash are applied after restart.
"""

from __future__ import annotations

import logging

from gateway import tracing
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.store.base import AppliedEvent, Store
from gateway.worker import BackgroundWorker

log = logging.getLogger("gateway.webhooks")

# Events applied per transaction: enough that a burst is applied in a few
# transactions, few enough that the writer is not held long from accepts.
APPLY_BATCH = 500


class WebhookApplier:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        *,
        poll_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.clock = clock
        self._swept_at = float("-inf")
        self.worker = BackgroundWorker(
            "webhook-applier",
            self._step,
            interval=poll_interval,
            clock=clock,
            logger=log,
            failure="applying webhooks failed",
        )

    async def start(self) -> None:
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()  # no grace: the store keeps what is not applied yet

    def notify(self) -> None:
        self.worker.wake()

    async def run_once(self) -> None:
        """Apply every waiting event, then sweep for overdue confirmations."""
        await self.apply_waiting()
        await self.sweep()

    async def apply_waiting(self) -> None:
        while True:
            applied = await self.store.apply_webhooks("omneo", APPLY_BATCH)
            for ev in applied:
                self.metrics.webhooks.labels(ev.event, ev.result).inc()
                for c in ev.confirmations:
                    self.metrics.confirmation_lag.observe(c.lag)
                self.metrics.deliveries.labels("omneo", "confirmed").inc(len(ev.confirmations))
                _trace(ev)
            if len(applied) < APPLY_BATCH:
                break

    async def sweep(self) -> None:
        self._swept_at = self.clock.monotonic()
        cutoff = self.clock.now() - self.settings.omneo_confirm_timeout
        late = await self.store.mark_unconfirmed("omneo", cutoff)
        if late:
            log.warning("omneo deliveries unconfirmed", extra={"count": late})
        self.metrics.unconfirmed.set(await self.store.count_state("omneo", "unconfirmed"))

    async def _step(self) -> None:
        # Woken by every stored event: those are applied at once, but the
        # timeout sweep (a write and a count) runs once per poll interval, not
        # once per event, or a burst of webhooks would pay for it each time.
        await self.apply_waiting()
        if self.clock.monotonic() - self._swept_at >= self.poll_interval:
            await self.sweep()
        # then rest: poll_interval, or until notify()


def _trace(ev: AppliedEvent) -> None:
    """`omneo.confirm`: an applied event, a span in the trace of the write it
    confirmed (the traceparent stored with it), or linked to each when it
    confirmed writes of several traces; its own trace when it matched none.
    Made once the transaction has committed, so it marks the moment, and holds
    the event's name, its result and a count: no id, no key it matched by."""
    if not tracing.enabled():
        return
    parent, links = tracing.joined(c.traceparent for c in ev.confirmations)
    attrs: tracing.Attrs = {
        "gateway.webhook.event": ev.event,
        "gateway.webhook.result": ev.result,
        "gateway.confirmed": len(ev.confirmations),
    }
    with tracing.span("omneo.confirm", attrs, parent=parent, links=links, root=True):
        pass
