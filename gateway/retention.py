"""Removes stored payloads once they are no longer needed (GATEWAY_RETENTION_DAYS).

A write's profile is kept while any of its deliveries may still be sent (or
replayed by a person looking at dead letters); once every delivery has been
settled for the retention period, the profile goes and its ids and states stay.
Runs in every `gateway serve` process: the purge is idempotent and works in
short transactions, so replicas running it side by side only repeat a no-op.
"""

from __future__ import annotations

import logging
import time

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.config import Settings
from gateway.store.base import PurgeResult, Store
from gateway.worker import BackgroundWorker

log = logging.getLogger("gateway.retention")
DAY = 86400.0
# The first purge waits a little after start, so a restart loop does not purge
# in a loop and startup stays fast.
FIRST_DELAY = 60.0


def cutoff(settings: Settings, now: float | None = None) -> float:
    return (time.time() if now is None else now) - settings.retention_days * DAY


async def purge_once(store: Store, settings: Settings, now: float | None = None) -> PurgeResult:
    started = time.perf_counter()
    result = await store.purge(cutoff(settings, now))
    if result.writes or result.webhook_events or result.idempotency_keys:
        log.info(
            "purged payloads past retention",
            extra={
                "writes": result.writes,
                "webhook_events": result.webhook_events,
                "idempotency_keys": result.idempotency_keys,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
    return result


class RetentionPurger:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        first_delay: float = FIRST_DELAY,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.store = store
        self.settings = settings
        self.first_delay = first_delay
        self.clock = clock
        self.worker = BackgroundWorker(
            "retention-purge",
            self._step,
            interval=settings.purge_interval,
            clock=clock,
            first_delay=first_delay,
            logger=log,
            failure="retention purge failed; trying again later",
        )

    async def start(self) -> None:
        if self.settings.retention_days > 0:
            self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()  # no grace: the purge is idempotent, the next one redoes it

    async def _step(self) -> None:
        await purge_once(self.store, self.settings, self.clock.now())
