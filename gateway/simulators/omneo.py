"""Omneo simulator: batch profile writes, answered at once, outcomes by webhook.

Faithful to `seeds/002_*` and `seeds/004_*` and to what Omneo says of its
webhooks (see PRODUCT.md):

- `POST /api/v3/profiles/batch` (alias `/api/v3/profiles/batch.json`) takes
  `match_criteria` ("email" or an identity handle), 1-500 `profiles` and an
  optional `import_job_id`, and answers 202 `{"data": {"message": "Batch queued
  for processing.", "batch_id": <uuid>}}`. Nothing about the profiles is in the
  answer.
- Later (a background task in `omneo_processing`, after `processing_delay`),
  each profile is matched by email or by the identity whose handle is
  `match_criteria`, then created (new integer `id` from 1000) or updated, and a
  `profile.created` or `profile.updated` webhook POSTs the profile itself (no
  envelope, no event type) to the URL subscribed to that trigger, signed (see
  `omneo_webhooks`).
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

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from gateway.simulators.common import (
    Call,
    SimState,
    business_endpoint,
    control_routes,
    json_response,
)
from gateway.simulators.omneo_control import webhook_routes
from gateway.simulators.omneo_processing import (
    BatchProcessor,
    BatchRecord,
    ProcessingError,
    WebhookSkip,
)
from gateway.simulators.omneo_store import OmneoProfile, context
from gateway.simulators.omneo_validation import INVALID_MESSAGE, validate_batch
from gateway.simulators.omneo_webhooks import SignatureEncoding, WebhookAttempt, WebhookSettings

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


class OmneoSim(SimState):
    """`app.state.sim` of the Omneo simulator: the tokens, the batches accepted,
    and (in `processor`) the background processing and its webhooks."""

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
        self.batches: list[BatchRecord] = []
        self.processor = BatchProcessor(
            rng=self.rng,
            settings=settings,
            processing_delay=processing_delay,
            transport=transport,
        )
        self.store = self.processor.store
        self.sender = self.processor.sender

    # What tests read.

    @property
    def settings(self) -> WebhookSettings:
        return self.processor.settings

    @property
    def errors(self) -> list[ProcessingError]:
        return self.processor.errors

    @property
    def skipped(self) -> list[WebhookSkip]:
        return self.processor.skipped

    @property
    def created(self) -> int:
        return self.processor.created

    @property
    def updated(self) -> int:
        return self.processor.updated

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
        await self.processor.idle()

    async def aclose(self) -> None:
        await self.processor.aclose()

    def update_settings(self, changes: dict[str, Any]) -> WebhookSettings:
        """Merges `changes` into the webhook settings; raises msgspec.ValidationError."""
        return self.processor.update_settings(changes)

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
            "pending_tasks": self.processor.pending,
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
        self.processor.queue(batch, body["profiles"])
        return json_response({"data": {"message": QUEUED_MESSAGE, "batch_id": batch.batch_id}}, 202)


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
        *webhook_routes(sim.processor),
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
