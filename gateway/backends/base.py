"""What the dispatcher may ask of a backend adapter, and what it gets back.

An adapter maps normalized profiles to one backend's API and reads that API's
answers back into per-delivery outcomes. It knows nothing of SQL, routing or
retry timing: it gets `Item`s, returns one `Outcome` per item, and reaches the
network only through a `Sender` (see `gateway.backends.transport.sender`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import httpx
import msgspec

# accepted, confirmed, failed or retry: the lifecycle defines them and maps
# each to the delivery state it records.
from gateway.lifecycle import OutcomeState as OutcomeState
from gateway.schema import Backend, NormalizedProfile

# The lanes, for the transport (which imports nothing above this module): a
# call's lane orders it at the backend's pacer.
from gateway.schema import Lane as Lane


class Item(msgspec.Struct, frozen=True):
    """One delivery of one profile write to this backend."""

    delivery_id: int
    profile: NormalizedProfile
    backend_id: str | None = None  # the id this backend gave the profile before, if any
    # The fields (`ChangeAware.fields` names) that differ from what the backend
    # last accepted; None: unknown or a re-send asked for, so send everything.
    # Never empty: the dispatcher ends a write that changes nothing `unchanged`.
    changed: frozenset[str] | None = None
    # The write's lane: a call carrying a real-time write goes before bulk
    # calls at the backend's pacer (transport/turns.py).
    lane: Lane = "realtime"


def lane_of(items: Sequence[Item]) -> Lane:
    """The lane of a call carrying `items`: real-time if any of them is."""
    return "realtime" if any(i.lane == "realtime" for i in items) else "bulk"


class Outcome(msgspec.Struct, frozen=True):
    delivery_id: int
    state: OutcomeState
    error: str | None = None
    # Recorded even on `retry`: an Ocamba profile created before a failed import
    # must not be created twice.
    backend_id: str | None = None
    retry_after: float | None = None
    # The key the backend will name the profile by when it reports back later
    # (Omneo's webhooks: the email or the match_criteria identity).
    match_key: str | None = None
    # False when the adapter handed the item back without calling the backend
    # (its own pacing or time budget): that try does not count as an attempt,
    # or a long backlog would run out of attempts without ever being sent.
    sent: bool = True
    # True on a `retry` because the backend could not be reached or answered
    # 5xx: evidence the backend itself is down (it feeds the circuit breaker),
    # unlike a rate limit or an unsendable profile.
    unavailable: bool = False
    # When the call carrying the item was made, for a backend that confirms
    # later: its report cannot predate this, however late the outcome is
    # recorded (see `gateway.store.base.DeliveryResult.sent_at`).
    sent_at: float | None = None
    # Fields (`ChangeAware.fields` names) of the item the backend did not take
    # although the outcome is accepted or confirmed (Ocamba cannot update a
    # known profile's email, phone or name): never remembered as sent.
    not_applied: frozenset[str] = frozenset()


class BackendError(Exception):
    """A whole call failed; `status` is the HTTP status, None for transport errors."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientError(BackendError):
    """Worth retrying: 408, 429, 5xx but 501/505, timeouts, connection errors.

    `unavailable` says the backend looks down (no connection, no answer in
    time, a 5xx), as opposed to busy (429) or our own pacing (`NotSent`)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        unavailable: bool = False,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        self.unavailable = unavailable


class NotSent(TransientError):
    """The call was never made: our own pacing would have waited too long."""


class PermanentError(BackendError):
    """Retrying cannot help: other 4xx, 501, 505."""


class Sender(Protocol):
    """The transport boundary: paced, timed, classified HTTP."""

    async def post(
        self,
        endpoint: str,
        path: str,
        *,
        json: Any,
        headers: Mapping[str, str] | None = None,
        lane: Lane = "realtime",
    ) -> httpx.Response:
        """POST to base URL + path. Returns only 2xx answers; raises
        `TransientError` or `PermanentError` for everything else. `endpoint` is a
        short label for metrics ("create", "import", "batch"); `lane` orders the
        call at the pacer (real-time first)."""
        ...


class BackendAdapter(Protocol):
    name: Backend
    batch_size: int  # most items the dispatcher hands over in one call

    async def deliver(self, items: Sequence[Item]) -> list[Outcome]:
        """One outcome per item, in any order. May raise `TransientError` /
        `PermanentError` when the whole call failed alike for every item."""
        ...


@runtime_checkable
class ChangeAware(Protocol):
    """An adapter whose writes the dispatcher compares with what the backend
    last accepted (gateway/dispatch/changes.py), so a write that changes
    nothing costs no call. `fields` is the item's mapped payload as the
    backend would get it, one value per field the backend updates on its own;
    an adapter that sends only changed fields reads `Item.changed`."""

    resend: bool  # the mapping file's `resend`: always send every field

    def fields(self, item: Item) -> dict[str, Any]:
        """Field name -> value (anything JSON-encodable). May raise when the
        mapping cannot apply: the item is then sent as it is, to fail there."""
        ...


def retry_the_rest(
    items: Sequence[Item],
    done: Mapping[int, Outcome],
    failure: TransientError | None,
    fallback: str,
    match_key: Callable[[Item], str | None] | None = None,
) -> list[Outcome]:
    """The outcomes in `done`, and `retry` for every item without one: after
    `failure`, or with `fallback` (which only guards an adapter bug)."""
    error = str(failure) if failure is not None else fallback
    retry_after = failure.retry_after if failure is not None else None
    sent = not isinstance(failure, NotSent)
    unavailable = failure is not None and failure.unavailable
    return [
        done.get(item.delivery_id)
        or Outcome(
            item.delivery_id,
            "retry",
            error,
            retry_after=retry_after,
            match_key=match_key(item) if match_key else None,
            sent=sent,
            unavailable=unavailable,
        )
        for item in items
    ]
