"""A profile as the operator page shows it: its state on every backend, not its data.

Operators debugging delivery need states, attempts, errors and the backends'
ids; they do not need a person's email or phone. So the page gets the names of
the fields the latest write carries (a missing email explains an Ocamba
`failed`), never their values.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from gateway.logs import redact
from gateway.schema import Backend
from gateway.store.base import DeliveryState, ProfileView


class BackendState(msgspec.Struct):
    backend: Backend
    state: DeliveryState | None  # null: the latest write did not target it
    attempts: int
    last_error: str | None
    updated_at: float | None
    backend_id: str | None
    # `merged`: carried by delivery `merged_into`, which is in `carrier_state`.
    merged_into: int | None = None
    carrier_state: DeliveryState | None = None


class ProfileSummary(msgspec.Struct):
    external_id: str
    last_request_id: str
    updated_at: float
    fields: list[str]  # fields the latest write carries; values withheld
    backends: list[BackendState]


def summarize(view: ProfileView, configured: Sequence[Backend]) -> ProfileSummary:
    # An erased or purged profile has no payload left: no fields to list.
    data = msgspec.to_builtins(view.profile) if view.profile is not None else {}
    fields = sorted(k for k, v in data.items() if k != "external_id" and v not in (None, [], {}))
    states = []
    for backend in [*configured, *(b for b in view.backends if b not in configured)]:
        d = view.backends.get(backend)
        states.append(
            BackendState(
                backend=backend,  # type: ignore[arg-type]  # keys are Backend names
                state=d.state if d else None,
                attempts=d.attempts if d else 0,
                last_error=redact(d.last_error) if d and d.last_error else None,
                updated_at=d.updated_at if d else None,
                backend_id=view.backend_ids.get(backend) or (d.backend_id if d else None),
                merged_into=d.merged_into if d else None,
                carrier_state=d.carrier_state if d else None,
            )
        )
    return ProfileSummary(
        external_id=view.external_id,
        last_request_id=view.last_request_id,
        updated_at=view.updated_at,
        fields=fields,
        backends=states,
    )
