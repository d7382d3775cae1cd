"""Deliveries in the states the operator page shows, put straight into a store."""

from __future__ import annotations

import time
import uuid

from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import DeliveryResult, DeliveryState, NewRequest, Store


async def seed(
    store: Store,
    external_id: str,
    backend: Backend,
    state: DeliveryState,
    error: str | None = None,
    *,
    email: str = "jane.doe@example.com",
) -> int:
    """One write of `external_id` to `backend`, its delivery left in `state`."""
    await store.accept(
        NewRequest(
            request_id=uuid.uuid4().hex,
            app="crm",
            targets=[backend],
            profiles=[NormalizedProfile(external_id=external_id, email=email, first_name="Jane")],
            received_at=time.time(),
        )
    )
    [claim] = [
        c for c in await store.claim(backend, 1000, "seed", 60) if c.external_id == external_id
    ]
    if state == "in_flight":
        return claim.delivery_id
    if state == "unconfirmed":
        # As in production: accepted, then the confirmation timeout sweeps it.
        await store.record("seed", [DeliveryResult(claim.delivery_id, "accepted", error)])
        await store.mark_unconfirmed(backend, time.time() + 1)
        return claim.delivery_id
    next_at = time.time() + 3600 if state == "retrying" else None
    await store.record(
        "seed", [DeliveryResult(claim.delivery_id, state, error, next_attempt_at=next_at)]
    )
    return claim.delivery_id
