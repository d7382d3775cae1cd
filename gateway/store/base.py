"""The Store protocol: everything the rest of the gateway may ask of storage.

The API, the dispatcher and the webhook receivers talk to this protocol only;
`gateway.store.sqlite` is the embedded implementation and a PostgreSQL one can
follow without touching its callers.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from gateway.schema import Backend, NormalizedProfile

DeliveryState = Literal[
    "pending",
    "in_flight",
    "retrying",
    "accepted",
    "confirmed",
    "failed",
    "dead",
    "unconfirmed",
]
# States a delivery can still leave on its own; the rest wait for a person
# (failed, dead) or for a webhook (accepted on Omneo, unconfirmed).
OPEN_STATES: tuple[DeliveryState, ...] = ("pending", "in_flight", "retrying")


class StoreError(Exception):
    """Storage failed (disk full, database gone); the write was not stored."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different body."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"Idempotency-Key already used for request {request_id}")
        self.request_id = request_id


class NewRequest(msgspec.Struct, frozen=True):
    request_id: str
    app: str
    targets: list[Backend]
    profiles: list[NormalizedProfile]
    received_at: float
    idempotency_key: str | None = None
    body_hash: str | None = None


class AcceptResult(msgspec.Struct, frozen=True):
    request_id: str
    profiles: int
    targets: list[Backend]
    replayed: bool = False  # True when an Idempotency-Key matched an earlier write


class DeliveryView(msgspec.Struct):
    backend: Backend
    state: DeliveryState
    attempts: int
    last_error: str | None
    updated_at: float
    backend_id: str | None = None


class ProfileWriteView(msgspec.Struct):
    external_id: str
    position: int
    deliveries: list[DeliveryView]


class RequestView(msgspec.Struct):
    request_id: str
    app: str
    received_at: float
    targets: list[Backend]
    profiles: list[ProfileWriteView]


class ProfileView(msgspec.Struct):
    external_id: str
    last_request_id: str
    updated_at: float
    profile: NormalizedProfile
    backends: dict[str, DeliveryView]  # latest delivery per backend
    backend_ids: dict[str, str]


class Store(Protocol):
    async def open(self) -> None:
        """Connect and apply pending migrations."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot answer a query."""
        ...

    async def accept(self, request: NewRequest) -> AcceptResult:
        """Durably store a request, its profiles and one `pending` delivery per
        (profile, target). Returns only after commit. Raises
        `IdempotencyConflict` or `StoreError`; on either nothing is stored."""
        ...

    async def get_request(self, request_id: str) -> RequestView | None: ...

    async def get_profile(self, external_id: str) -> ProfileView | None: ...
