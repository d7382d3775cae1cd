"""Omneo's background half: a queued batch, processed later, told by webhook.

After `processing_delay` each profile of a batch is matched and created or
updated in the store (or recorded in `errors` when it cannot be), and each
outcome becomes a `profile.created` or `profile.updated` event: skipped (an
echo of the webhook's own namespace, no URL subscribed, or dropped by the
`drop_rate` switch) or sent, once or (`duplicate_rate`) twice, with at most
`WEBHOOK_CONCURRENCY` POSTs in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine
from typing import Any, Literal

import httpx
import msgspec

from gateway.simulators.omneo_store import MatchError, OmneoStore, context
from gateway.simulators.omneo_webhooks import (
    CREATED,
    UPDATED,
    WebhookAttempt,
    WebhookSender,
    WebhookSettings,
    signed_headers,
)

logger = logging.getLogger(__name__)

WEBHOOK_CONCURRENCY = 16  # webhook POSTs in flight at once


class BatchRecord(msgspec.Struct, kw_only=True):
    batch_id: str
    namespace: str  # of the token that wrote it
    match_criteria: str
    import_job_id: str | None
    size: int
    processed: bool = False


class ProcessingError(msgspec.Struct, kw_only=True):
    batch_id: str
    index: int  # position in the batch's `profiles`
    reason: str


class WebhookSkip(msgspec.Struct, kw_only=True):
    """An event that was not sent, and why."""

    batch_id: str
    event: str
    profile_id: int
    reason: Literal["echo", "dropped", "no_url"]


class BatchProcessor:
    """Processes queued batches and sends their webhooks, each as a background task.

    `rng` is the simulator's own, so a seed decides drops and duplicates too."""

    def __init__(
        self,
        *,
        rng: random.Random,
        settings: WebhookSettings,
        processing_delay: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.rng = rng
        self.settings = settings
        self.processing_delay = processing_delay
        self.store = OmneoStore()
        self.sender = WebhookSender(transport)
        self.errors: list[ProcessingError] = []
        self.skipped: list[WebhookSkip] = []
        self.created = 0
        self.updated = 0
        self._deliveries = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Omneo sends its webhooks from a queue, a few at a time; a task per event
        # without a bound would flood this process (and the gateway) at once.
        self._sending = asyncio.Semaphore(WEBHOOK_CONCURRENCY)

    @property
    def webhooks(self) -> list[WebhookAttempt]:
        return self.sender.attempts

    @property
    def pending(self) -> int:
        """Batches being processed plus webhooks not yet sent."""
        return len(self._tasks)

    def update_settings(self, changes: dict[str, Any]) -> WebhookSettings:
        """Merges `changes` into the webhook settings; raises msgspec.ValidationError."""
        merged = {**msgspec.structs.asdict(self.settings), **changes}
        self.settings = msgspec.convert(merged, WebhookSettings)
        return self.settings

    def queue(self, batch: BatchRecord, profiles: list[dict[str, Any]]) -> None:
        """Processes `profiles` in the background, after `processing_delay`."""
        self._spawn(self._process(batch, profiles))

    async def idle(self) -> None:
        """Returns once no batch is being processed and no webhook is pending."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.sender.aclose()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("omneo simulator task failed", exc_info=task.exception())

    async def _process(self, batch: BatchRecord, profiles: list[dict[str, Any]]) -> None:
        await asyncio.sleep(self.processing_delay)
        for index, incoming in enumerate(profiles):
            try:
                profile, created = self.store.upsert(batch.match_criteria, incoming)
            except MatchError as exc:
                self.errors.append(
                    ProcessingError(batch_id=batch.batch_id, index=index, reason=str(exc))
                )
                continue
            if created:
                self.created += 1
            else:
                self.updated += 1
            self._emit(batch, CREATED if created else UPDATED, profile.id, context(profile))
        batch.processed = True

    def _emit(self, batch: BatchRecord, event: str, profile_id: int, body: Any) -> None:
        settings = self.settings
        url = settings.url_for(event)
        reason: Literal["echo", "dropped", "no_url"] | None = None
        if batch.namespace == settings.namespace:
            reason = "echo"
        elif not url:
            reason = "no_url"
        elif settings.drop_rate and self.rng.random() < settings.drop_rate:
            reason = "dropped"
        if reason is None and url:
            self._send_copies(event, url, body, settings)
            return
        self.skipped.append(
            WebhookSkip(
                batch_id=batch.batch_id,
                event=event,
                profile_id=profile_id,
                reason=reason or "no_url",
            )
        )

    def _send_copies(self, event: str, url: str, body: Any, settings: WebhookSettings) -> None:
        # Encoded once: a duplicate is byte-for-byte the same event.
        raw = msgspec.json.encode(body)
        headers = signed_headers(raw, settings)
        copies = 2 if settings.duplicate_rate and self.rng.random() < settings.duplicate_rate else 1
        for _ in range(copies):
            self._deliveries += 1
            self._spawn(self._send(self._deliveries, event, url, raw, headers, settings))

    async def _send(
        self,
        delivery: int,
        event: str,
        url: str,
        raw: bytes,
        headers: dict[str, str],
        settings: WebhookSettings,
    ) -> None:
        if settings.delay:
            await asyncio.sleep(settings.delay)
        async with self._sending:
            await self.sender.deliver(
                delivery=delivery, event=event, url=url, raw=raw, headers=headers, settings=settings
            )
