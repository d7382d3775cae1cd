"""Omneo's outgoing webhooks: settings, signature, and delivery with retries.

Omneo publishes that a webhook may carry a secret for an HMAC signature but not
the header or the algorithm; this simulator signs HMAC-SHA256 over the exact raw
body bytes, hex (default) or base64, in a configurable header. With an empty
secret no signature header is sent at all, like a webhook without a secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import httpx
import msgspec

from gateway.simulators.common import Rate, Seconds

logger = logging.getLogger(__name__)

SignatureEncoding = Literal["hex", "base64"]
CREATED = "profile.created"
UPDATED = "profile.updated"


class WebhookSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Adjustable at runtime: `PUT /_sim/webhooks` merges the keys it is given."""

    created_url: str | None = None
    updated_url: str | None = None
    secret: str = ""
    namespace: str = "gateway-webhooks"
    signature_header: str = "X-Omneo-Hmac-SHA256"
    signature_encoding: SignatureEncoding = "hex"
    drop_rate: Rate = 0.0  # share of events never sent
    duplicate_rate: Rate = 0.0  # share of events sent twice
    delay: Seconds = 0.0  # before the first attempt of each event
    max_retries: Annotated[int, msgspec.Meta(ge=0)] = 3
    retry_backoff: Seconds = 0.05  # doubled after each failed attempt
    timeout: Seconds = 5.0  # per attempt

    def url_for(self, event: str) -> str | None:
        return self.created_url if event == CREATED else self.updated_url


class WebhookAttempt(msgspec.Struct, kw_only=True):
    """One POST of one webhook; a retried or duplicated event has several."""

    delivery: int  # one per copy sent: a duplicate gets its own number
    attempt: int  # 1 for the first try
    event: str
    url: str
    headers: dict[str, str]
    body: Any  # the decoded profile context
    raw: str  # the exact bytes that were signed
    status: int | None  # None when the connection failed
    error: str | None
    at: float  # time.monotonic()


def sign(raw: bytes, secret: str, encoding: SignatureEncoding) -> str:
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def signed_headers(raw: bytes, settings: WebhookSettings) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "omneo-simulator"}
    if settings.secret:
        headers[settings.signature_header] = sign(raw, settings.secret, settings.signature_encoding)
    return headers


class WebhookSender:
    """POSTs webhooks through one shared client and logs every attempt."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.attempts: list[WebhookAttempt] = []
        self.delivered = 0
        self.failed = 0
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def open(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._transport)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(
        self,
        *,
        delivery: int,
        event: str,
        url: str,
        raw: bytes,
        headers: Mapping[str, str],
        settings: WebhookSettings,
    ) -> bool:
        """Sends until a 2xx or `max_retries` retries are spent; True on success."""
        # Opened lazily too, for apps driven through ASGITransport without a lifespan.
        self.open()
        assert self._client is not None
        body = msgspec.json.decode(raw)
        for attempt in range(1, settings.max_retries + 2):
            status: int | None = None
            error: str | None = None
            try:
                response = await self._client.post(
                    url, content=raw, headers=dict(headers), timeout=settings.timeout
                )
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.attempts.append(
                WebhookAttempt(
                    delivery=delivery,
                    attempt=attempt,
                    event=event,
                    url=url,
                    headers=dict(headers),
                    body=body,
                    raw=raw.decode(),
                    status=status,
                    error=error,
                    at=time.monotonic(),
                )
            )
            if status is not None and 200 <= status < 300:
                self.delivered += 1
                return True
            if attempt <= settings.max_retries:
                await asyncio.sleep(settings.retry_backoff * 2 ** (attempt - 1))
        self.failed += 1
        logger.warning("webhook %s to %s failed after %d attempts", event, url, attempt)
        return False
