"""The Store protocol: everything the rest of the gateway may ask of storage.

The API, the dispatcher and the webhook receivers talk to this protocol only;
`gateway.store.sqlite` is the embedded implementation and a PostgreSQL one can
follow without touching its callers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import msgspec

# Re-exported: callers import the state type from the protocol they use.
from gateway.clock import Clock
from gateway.lifecycle import DeliveryState as DeliveryState
from gateway.schema import LANES, Backend, Lane, NormalizedProfile
from gateway.store.records import (
    AppliedEvent as AppliedEvent,
)
from gateway.store.records import (
    Confirmation as Confirmation,
)
from gateway.store.records import (
    Erasure as Erasure,
)
from gateway.store.records import (
    PurgeResult as PurgeResult,
)
from gateway.store.records import (
    SavedEvent as SavedEvent,
)
from gateway.store.records import (
    SealedTable as SealedTable,
)
from gateway.store.records import (
    SealStatus as SealStatus,
)
from gateway.store.records import (
    WebhookEvent as WebhookEvent,
)
from gateway.store.records import (
    WebhookResult as WebhookResult,
)


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
    lane: Lane = "realtime"
    resend: bool = False  # send every field, even those the backend has
    # The W3C traceparent of the span that accepted it (gateway/tracing.py):
    # its deliveries, sent later and maybe by another replica, join that trace.
    traceparent: str | None = None


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
    # A `merged` delivery: the id of the delivery that carried its write, and
    # that delivery's state (what became of this write too).
    merged_into: int | None = None
    carrier_state: DeliveryState | None = None


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
    lane: Lane = "realtime"  # the queue its deliveries wait in
    resend: bool = False  # sent whole, even what the backends had


# What is left of a write's profile: `purged` after the retention period,
# `erased` by an erasure request (DELETE /v1/profiles/{external_id}).
PayloadState = Literal["stored", "purged", "erased"]


class ProfileView(msgspec.Struct):
    external_id: str
    last_request_id: str
    updated_at: float
    profile: NormalizedProfile | None  # None once purged or erased
    backends: dict[str, DeliveryView]  # latest delivery per backend
    backend_ids: dict[str, str]
    payload: PayloadState = "stored"


class Claim(msgspec.Struct, frozen=True):
    """A delivery leased to one dispatcher worker until `lease_expires_at`."""

    delivery_id: int
    external_id: str
    profile: NormalizedProfile
    attempts: int  # including this one
    created_at: float
    backend_id: str | None = None
    lane: Lane = "realtime"
    # Later queued writes of the same person to the same backend that this
    # delivery carries (`profile` is their merged payload, gateway/store/merge.py);
    # they are `merged`, with `merged_into` this delivery, and share its outcome.
    carries: tuple[int, ...] = ()
    # How many of `carries` this claim ended `merged` (the rest were merged by
    # an earlier claim of this delivery: a retry, a lease taken over, a replay).
    merged_now: int = 0
    # The request asked to send every field, even those the backend has.
    resend: bool = False
    # The stored traceparent of this write's request, and those of the writes
    # it carries, distinct (None, (): accepted with tracing off).
    traceparent: str | None = None
    carried_traceparents: tuple[str, ...] = ()


def lane_order(lanes: Sequence[Lane]) -> tuple[Lane, ...]:
    """The lanes a claim takes, in order: one or both, each once."""
    if not lanes or len(set(lanes)) != len(lanes) or not set(lanes) <= set(LANES):
        raise ValueError(f"lanes: one or both of {LANES}, each once, not {tuple(lanes)!r}")
    return tuple(lanes)


class DeliveryResult(msgspec.Struct, frozen=True):
    """What became of one claimed delivery; the dispatcher decides the state."""

    delivery_id: int
    state: DeliveryState
    error: str | None = None
    backend_id: str | None = None
    next_attempt_at: float | None = None  # for `retrying`
    match_key: str | None = None  # how the backend's webhooks will name the profile
    refund_attempt: bool = False  # handed back unsent: the claim's attempt does not count
    # When the call carrying it was made (`Outcome.sent_at`): stored as
    # `accepted_at`, the time a webhook's arrival is compared against. None:
    # the time the result is recorded.
    sent_at: float | None = None
    # On `accepted` / `confirmed` only: {field: keyed digest} the backend now
    # has, merged over what `sent_fields` held (other states never store it).
    digests: dict[str, str] | None = None


class DeadLetter(msgspec.Struct):
    delivery_id: int
    request_id: str
    external_id: str
    backend: Backend
    state: DeliveryState
    attempts: int
    last_error: str | None
    updated_at: float


class ReplayResult(msgspec.Struct):
    requeued: list[int]
    # A newer write of the same person already reached the backend; sending the
    # old one again would overwrite newer data.
    superseded: list[int]


class QueueStats(msgspec.Struct):
    backend: Backend
    depth: int
    oldest_age: float
    # `depth` by lane ("realtime", "bulk"): a backfill's queue is expected to
    # be long, a real-time one's is not.
    lanes: dict[str, int] = msgspec.field(default_factory=dict)


class Store(Protocol):
    # Every time the store stamps or compares (due, lease, accepted) comes
    # from it; a test hands the store and the dispatcher one FakeClock.
    clock: Clock

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

    # -- the dispatcher's queue ---------------------------------------------

    async def expand(self) -> int:
        """Make the deliveries of the oldest accepted requests now (one bounded
        step, see gateway/store/expand.py); returns how many it made. Every
        claim does this first, so callers need it only to look at deliveries
        before any claim (tests, `gateway` tools)."""
        ...

    async def claim(
        self,
        backend: Backend,
        limit: int,
        owner: str,
        lease_seconds: float,
        lanes: Sequence[Lane] = LANES,
        settle: float = 0.0,
    ) -> list[Claim]:
        """Lease up to `limit` due deliveries of `backend`, oldest first. A
        delivery is due when pending or retrying and its time has come (a
        pending one `settle` seconds after it: the person's writes within that
        span are then queued too, and ride along merged, gateway/store/merge.py),
        or in
        flight with an expired lease (its worker died). A delivery is never due
        while an earlier write of the same person to the same backend is still
        open, whatever its lane, so two writes of one profile never overtake
        each other. Expired leases come first, whatever their lane; then the
        due deliveries of each lane in `lanes` in turn, oldest first within a
        lane, the next lane filling what the one before left room for (a lane
        not named is not claimed)."""
        ...

    async def sent_fields(
        self, backend: Backend, external_ids: list[str]
    ) -> dict[str, dict[str, str]]:
        """What `backend` last accepted of each of these people, per field:
        external_id -> {field: keyed digest}; people it never accepted are absent."""
        ...

    async def record(self, owner: str, results: list[DeliveryResult]) -> int:
        """Store outcomes of deliveries leased by `owner`; results for a lease
        that expired and passed to another worker are ignored. Returns the count
        applied."""
        ...

    async def queue_stats(self) -> list[QueueStats]: ...

    # -- dead letters --------------------------------------------------------

    async def list_deliveries(
        self, states: list[DeliveryState], backend: Backend | None = None, limit: int = 100
    ) -> list[DeadLetter]: ...

    async def recent_deliveries(
        self,
        state: DeliveryState,
        backend: Backend | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[DeadLetter]:
        """Deliveries in `state`, newest first (by id); `before_id` pages on to
        older ones. One state per call, so each engine walks that state's index
        (the operator page polls this)."""
        ...

    async def replay(
        self,
        states: list[DeliveryState],
        *,
        delivery_id: int | None = None,
        backend: Backend | None = None,
    ) -> ReplayResult:
        """Put matching deliveries back to `pending` with their attempts reset."""
        ...

    # -- webhooks ------------------------------------------------------------

    async def save_webhook(self, event: WebhookEvent) -> SavedEvent:
        """Commit the event before anyone answers the sender. The same event
        (same source, event name and body) is stored once; later copies come
        back as `duplicate`."""
        ...

    async def apply_webhooks(self, source: Backend, limit: int = 100) -> list[AppliedEvent]:
        """Apply stored, not yet applied events, oldest first: each confirms the
        `accepted` or `unconfirmed` deliveries of its match key whose
        `accepted_at` (when their call was sent, `DeliveryResult.sent_at`) is
        strictly before it arrived, and records the backend's id of the
        profile. An event older (by the backend's own clock) than one already
        applied for the same profile is `stale` and changes nothing."""
        ...

    async def mark_unconfirmed(self, backend: Backend, accepted_before: float) -> int:
        """`accepted` deliveries older than the cut-off become `unconfirmed`."""
        ...

    async def count_state(self, backend: Backend, state: DeliveryState) -> int: ...

    # -- several replicas on one store ----------------------------------------

    async def subscribe(self, wake: Callable[[Backend], None]) -> None:
        """Call `wake(backend)` whenever another process commits deliveries
        for `backend` (PostgreSQL: LISTEN/NOTIFY). In-process writes already
        wake the dispatcher directly; an embedded store may do nothing."""
        ...

    # -- PII at rest (see gateway/crypto.py) ------------------------------------

    async def erase_profile(self, external_id: str) -> Erasure | None:
        """Remove every stored payload of the person (all writes, the webhooks
        that named them, the lookup tags), cancel their open deliveries (state
        `erased`), keep ids and states. None when the id was never written."""
        ...

    async def purge(self, cutoff: float) -> PurgeResult:
        """Remove the payloads of writes whose every delivery is settled (not
        pending, retrying or in flight) and unchanged since `cutoff`, and the
        bodies of applied webhooks received before it. In short transactions."""
        ...

    async def seal_status(self) -> SealStatus: ...

    async def reseal(self, table: SealedTable, after_id: int, span: int) -> tuple[int, int | None]:
        """Seal again, under the current key, the rows of `table` with ids in
        (after_id, after_id + span] that are plaintext or under an older key.
        Returns (rows resealed, the next after_id, or None past the last row)."""
        ...

    async def retag(
        self, match_key_of: Callable[[NormalizedProfile], str | None], after_id: int, span: int
    ) -> tuple[int, int | None]:
        """Index again, under the current key, the match keys of deliveries
        awaiting a webhook, from their profiles; like `reseal`."""
        ...

    async def retire_keys(self) -> list[str]:
        """Forget keys that are not current and seal nothing any more; returns
        their ids. After this, a process without them starts."""
        ...

    # -- operator page sessions (gateway/ui/session.py) ---------------------------

    async def add_ui_session(self, id_hash: str, app: str, expires_at: float, now: float) -> None:
        """Record a signed-in session (and forget the ones expired by `now`)."""
        ...

    async def ui_session_alive(self, id_hash: str, now: float) -> bool:
        """Whether the session is recorded, not ended and not expired."""
        ...

    async def end_ui_session(self, id_hash: str) -> None: ...

    async def end_all_ui_sessions(self) -> int:
        """End every session; returns how many there were."""
        ...

    async def lead(self, backend: Backend) -> bool:
        """Whether this process is, or has just become, the one that sends to
        `backend` among all processes sharing the store. Used for backends with
        rate limits, so the limit holds in total. Leadership is kept until the
        process (or its connection) dies. An embedded store: always True."""
        ...
