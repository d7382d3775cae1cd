"""Omneo simulator: batch profile writes, answered at once, outcomes by webhook.

Faithful to `seeds/002_*` and `seeds/004_*` and to what Omneo says of its
webhooks (see PRODUCT.md):

- `POST /api/v3/profiles/batch` (alias `/api/v3/profiles/batch.json`) takes
  `match_criteria` ("email" or an identity handle), 1-500 `profiles` and an
  optional `import_job_id`, and answers 202 `{"data": {"message": "Batch queued
  for processing.", "batch_id": <uuid>}}`. Nothing about the profiles is in the
  answer.
- Later (a background task, after `processing_delay`), each profile is matched
  by email or by the identity whose handle is `match_criteria`, then created
  (new integer `id` from 1000) or updated, and a `profile.created` or
  `profile.updated` webhook POSTs the profile itself (no envelope, no event type)
  to the URL subscribed to that trigger, signed (see `omneo_webhooks`).
- No echo: events caused by a token whose namespace equals the webhook's
  namespace are not sent (recorded in `skipped` with reason "echo").

Decisions where Omneo's docs are silent:

- Auth: `Authorization: Bearer <token>`, each token mapped to a namespace;
  otherwise 401 `{"message": "Unauthenticated."}` (Laravel's answer).
- Bad bodies: 422 Laravel style, see `omneo_validation`. An unparseable body is
  read as empty input, as Laravel does, so it is a 422 too.
- Other errors, Laravel style: 500 `{"message": "Server Error"}`, 429
  `{"message": "Too Many Attempts."}` with `Retry-After`, 503, 504.
- A profile without the key `match_criteria` needs, or whose email belongs to
  another profile, is skipped and recorded in `errors`; no webhook.
- A webhook POST that fails (connection error or non-2xx) is retried
  `max_retries` (3) times with doubling backoff from `retry_backoff`.
- Order: outage (503) -> auth (401) -> `delay` -> error / timeout / throttle
  faults -> validation (422) -> 202. A faulted request queues nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.simulators.common import (
    Call,
    SimState,
    business_endpoint,
    control_routes,
    json_response,
)
from gateway.simulators.omneo_store import MatchError, OmneoProfile, OmneoStore, context
from gateway.simulators.omneo_validation import INVALID_MESSAGE, validate_batch
from gateway.simulators.omneo_webhooks import (
    CREATED,
    UPDATED,
    SignatureEncoding,
    WebhookAttempt,
    WebhookSender,
    WebhookSettings,
    signed_headers,
)

logger = logging.getLogger(__name__)

# seeds/002 and 004 call http://localhost/api/v3/profiles/batch: the API root
# is the tenant's host plus /api, so a base URL without it gets a 404 here as
# from Omneo. `/_sim/*` stays at the server's root.
API_ROOT = "/api"
BATCH_PATH = API_ROOT + "/v3/profiles/batch"
BATCH_JSON_PATH = API_ROOT + "/v3/profiles/batch.json"
QUEUED_MESSAGE = "Batch queued for processing."

_MESSAGES = {
    401: "Unauthenticated.",
    429: "Too Many Attempts.",
    500: "Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


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


class OmneoSim(SimState):
    """`app.state.sim` of the Omneo simulator."""

    def __init__(
        self,
        *,
        tokens: dict[str, str],
        settings: WebhookSettings,
        processing_delay: float,
        seed: int | None,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        super().__init__(seed=seed)
        self.tokens = tokens
        self.settings = settings
        self.processing_delay = processing_delay
        self.store = OmneoStore()
        self.sender = WebhookSender(transport)
        self.batches: list[BatchRecord] = []
        self.errors: list[ProcessingError] = []
        self.skipped: list[WebhookSkip] = []
        self.created = 0
        self.updated = 0
        self._deliveries = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Omneo sends its webhooks from a queue, a few at a time; a task per event
        # without a bound would flood this process (and the gateway) at once.
        self._sending = asyncio.Semaphore(WEBHOOK_CONCURRENCY)

    # What tests read.

    @property
    def profiles(self) -> dict[int, OmneoProfile]:
        return self.store.profiles

    @property
    def webhooks(self) -> list[WebhookAttempt]:
        return self.sender.attempts

    @property
    def suppressed(self) -> list[WebhookSkip]:
        return [s for s in self.skipped if s.reason == "echo"]

    @property
    def dropped(self) -> list[WebhookSkip]:
        return [s for s in self.skipped if s.reason == "dropped"]

    async def idle(self) -> None:
        """Returns once no batch is being processed and no webhook is pending."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.sender.aclose()

    def update_settings(self, changes: dict[str, Any]) -> WebhookSettings:
        """Merges `changes` into the webhook settings; raises msgspec.ValidationError."""
        merged = {**msgspec.structs.asdict(self.settings), **changes}
        self.settings = msgspec.convert(merged, WebhookSettings)
        return self.settings

    def error_body(self, status: int, message: str) -> Any:
        return {"message": _MESSAGES.get(status, message)}

    def stats(self) -> Any:
        return {
            "batches": len(self.batches),
            "profiles": len(self.store.profiles),
            "created": self.created,
            "updated": self.updated,
            "processing_errors": len(self.errors),
            "webhooks_delivered": self.sender.delivered,
            "webhooks_failed": self.sender.failed,
            "webhook_attempts": len(self.sender.attempts),
            "webhooks_suppressed": len(self.suppressed),
            "webhooks_dropped": len(self.dropped),
            "pending_tasks": len(self._tasks),
            "received": len(self.received),
        }

    def profiles_view(self) -> Any:
        return [context(p) for p in self.store.profiles.values()]

    # The API.

    def accept_batch(self, body: Any, namespace: str) -> Response:
        errors = validate_batch(body)
        if errors:
            return json_response({"message": INVALID_MESSAGE, "errors": errors}, 422)
        batch = BatchRecord(
            batch_id=self.new_uuid(),
            namespace=namespace,
            match_criteria=body["match_criteria"],
            import_job_id=body.get("import_job_id"),
            size=len(body["profiles"]),
        )
        self.batches.append(batch)
        self._spawn(self._process(batch, body["profiles"]))
        return json_response({"data": {"message": QUEUED_MESSAGE, "batch_id": batch.batch_id}}, 202)

    # Background work.

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


def _webhook_routes(sim: OmneoSim) -> list[Route]:
    async def get_webhooks(request: Request) -> Response:
        return json_response(sim.webhooks)

    async def delete_webhooks(request: Request) -> Response:
        sim.sender.attempts.clear()
        sim.skipped.clear()
        return Response(status_code=204)

    async def get_settings(request: Request) -> Response:
        return json_response(sim.settings)

    async def put_settings(request: Request) -> Response:
        try:
            changes = msgspec.json.decode(await request.body(), type=dict[str, Any])
            return json_response(sim.update_settings(changes))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return json_response({"message": str(exc)}, 422)

    async def get_skipped(request: Request) -> Response:
        return json_response(sim.skipped)

    async def get_errors(request: Request) -> Response:
        return json_response(sim.errors)

    async def get_idle(request: Request) -> Response:
        try:
            timeout = float(request.query_params.get("timeout", "10"))
        except ValueError:
            return json_response({"message": "timeout must be a number of seconds"}, 400)
        try:
            await asyncio.wait_for(sim.idle(), timeout)
        except TimeoutError:
            return json_response({"idle": False}, 503)
        return json_response({"idle": True})

    return [
        Route("/_sim/webhooks", get_webhooks, methods=["GET"]),
        Route("/_sim/webhooks", delete_webhooks, methods=["DELETE"]),
        Route("/_sim/webhooks", put_settings, methods=["PUT"]),
        Route("/_sim/webhooks/settings", get_settings, methods=["GET"]),
        Route("/_sim/webhooks/skipped", get_skipped, methods=["GET"]),
        Route("/_sim/errors", get_errors, methods=["GET"]),
        Route("/_sim/idle", get_idle, methods=["GET"]),
    ]


def create_omneo_app(
    *,
    tokens: dict[str, str] | None = None,
    webhook_created_url: str | None = None,
    webhook_updated_url: str | None = None,
    webhook_secret: str = "",
    webhook_namespace: str = "gateway-webhooks",
    signature_header: str = "X-Omneo-Hmac-SHA256",
    signature_encoding: SignatureEncoding = "hex",
    processing_delay: float = 0.05,
    seed: int | None = None,
    webhook_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The Omneo simulator. `tokens` maps bearer token -> namespace.
    `webhook_transport` lets a test route webhooks in-process (e.g. an
    `httpx.ASGITransport` onto the gateway) instead of over TCP."""
    settings = WebhookSettings(
        created_url=webhook_created_url,
        updated_url=webhook_updated_url,
        secret=webhook_secret,
        namespace=webhook_namespace,
        signature_header=signature_header,
        signature_encoding=signature_encoding,
    )
    sim = OmneoSim(
        tokens=dict(tokens) if tokens is not None else {"omneo-token": "gateway"},
        settings=settings,
        processing_delay=processing_delay,
        seed=seed,
        transport=webhook_transport,
    )

    async def batch(call: Call) -> Response:
        token = call.bearer_token()
        namespace = sim.tokens.get(token) if token is not None else None
        if namespace is None:
            return sim.error(401, "Unauthenticated.")
        body = call.body if call.json_ok else {}
        return await call.process(lambda: sim.accept_batch(body, namespace))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sim.sender.open()
        try:
            yield
        finally:
            await sim.aclose()

    endpoint = business_endpoint(sim, batch)
    routes = [
        Route(BATCH_PATH, endpoint, methods=["POST"]),
        Route(BATCH_JSON_PATH, endpoint, methods=["POST"]),
        *control_routes(sim),
        *_webhook_routes(sim),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sim = sim
    return app


def omneo_sim(app: Starlette) -> OmneoSim:
    """`app.state.sim`, typed."""
    sim = app.state.sim
    assert isinstance(sim, OmneoSim)
    return sim


__all__ = [
    "API_ROOT",
    "BATCH_JSON_PATH",
    "BATCH_PATH",
    "BatchRecord",
    "OmneoSim",
    "ProcessingError",
    "WebhookAttempt",
    "WebhookSettings",
    "WebhookSkip",
    "create_omneo_app",
    "omneo_sim",
]
