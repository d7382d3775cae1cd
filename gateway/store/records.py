"""What webhooks, erasure and key rotation hand across the Store protocol
(gateway/store/base.py re-exports every name, so callers import from there)."""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.schema import Backend


class WebhookEvent(msgspec.Struct, frozen=True):
    """A backend's webhook as received, with what the receiver read out of it."""

    source: Backend
    event: str
    body_hash: str
    body: bytes
    received_at: float
    backend_id: str | None = None  # the id the backend gave the profile
    match_key: str | None = None  # correlates with `DeliveryResult.match_key`
    event_time: float | None = None  # the backend's own timestamp of the change
    invalid: bool = False  # signed but unreadable: kept for a person to look at


class SavedEvent(msgspec.Struct, frozen=True):
    event_id: int
    duplicate: bool


class Confirmation(msgspec.Struct, frozen=True):
    delivery_id: int
    external_id: str
    lag: float  # seconds from the backend accepting the delivery to the event
    traceparent: str | None = None  # stored with the confirmed write (gateway/tracing.py)


WebhookResult = Literal["applied", "unmatched", "stale", "invalid"]


class AppliedEvent(msgspec.Struct, frozen=True):
    event_id: int
    event: str
    result: WebhookResult
    confirmations: list[Confirmation]


class Erasure(msgspec.Struct, frozen=True):
    """What an erasure request removed; ids and delivery states stay for audit."""

    external_id: str
    writes_erased: int  # payloads removed now (already removed ones not counted)
    deliveries_cancelled: int  # pending or retrying: now `erased`, never sent
    deliveries_in_flight: int  # being sent at that moment: the backend may have it
    webhook_events_erased: int  # stored Omneo webhooks that named the person
    delivered_to: list[Backend]  # backends that took at least one write
    backend_ids: dict[str, str]  # how those backends know the person


class PurgeResult(msgspec.Struct, frozen=True):
    writes: int  # profile payloads removed
    webhook_events: int  # webhook bodies removed
    idempotency_keys: int = 0  # Idempotency-Key records (the caller's key, the body hash)


class SealStatus(msgspec.Struct, frozen=True):
    """Rows whose payload is not sealed under the current key (plaintext or an
    older key), per table; what `gateway rotate-key` has left to do."""

    profile_writes: int
    webhook_events: int
    deliveries_to_retag: int  # awaiting a webhook, indexed under an older key
    delivery_errors: int = 0  # backends' error texts not sealed under the current key

    @property
    def total(self) -> int:
        return (
            self.profile_writes
            + self.webhook_events
            + self.deliveries_to_retag
            + self.delivery_errors
        )


# What `reseal` works through: the `body` of profile_writes and webhook_events,
# and deliveries' `last_error` (a backend's text, which may quote the profile).
SealedTable = Literal["profile_writes", "webhook_events", "deliveries"]
