"""Removes stored payloads once they are no longer needed (GATEWAY_RETENTION_DAYS).

A write's profile is kept while any of its deliveries may still be sent (or
replayed by a person looking at dead letters); once every delivery has been
settled for the retention period, the profile goes and its ids and states stay.
Runs in every `gateway serve` process: the purge is idempotent and works in
short transactions, so replicas running it side by side only repeat a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.config import Settings
from gateway.store.base import PurgeResult, Store, StoreError

log = logging.getLogger("gateway.retention")
DAY = 86400.0
# The first purge waits a little after start, so a restart loop does not purge
# in a loop and startup stays fast.
FIRST_DELAY = 60.0


def cutoff(settings: Settings, now: float | None = None) -> float:
    return (time.time() if now is None else now) - settings.retention_days * DAY


async def purge_once(store: Store, settings: Settings) -> PurgeResult:
    started = time.perf_counter()
    result = await store.purge(cutoff(settings))
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
    def __init__(self, store: Store, settings: Settings, *, first_delay: float = FIRST_DELAY):
        self.store = store
        self.settings = settings
        self.first_delay = first_delay
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.settings.retention_days > 0:
            self._task = asyncio.create_task(self._run(), name="retention-purge")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            try:
                await purge_once(self.store, self.settings)
            except StoreError:
                log.exception("retention purge failed; trying again later")
            await asyncio.sleep(self.settings.purge_interval)
