"""What the status endpoints read: a request, and a person's latest state.

Run in one read-only snapshot on PostgreSQL, so that the reads agree. A
request not yet expanded (gateway/store/expand.py) has no delivery rows: its
profiles show one `pending` delivery per target until it is (`erased` where
an erasure reached the write first).
"""

from __future__ import annotations

from typing import Any

from gateway import lifecycle
from gateway.crypto import Sealer
from gateway.store.base import DeliveryView, ProfileView, ProfileWriteView, RequestView
from gateway.store.pii import ERASED_ERROR, open_error, open_profile
from gateway.store.plans import Fetch, FetchRow, Plan, as_list


def waiting(backend: str, since: float, removed: str | None = None) -> DeliveryView:
    """What a delivery not made yet looks like: as expand will make it."""
    if removed == "erased":  # lifecycle.CREATED
        return DeliveryView(backend, "erased", 0, ERASED_ERROR, since)  # type: ignore[arg-type]
    return DeliveryView(backend, lifecycle.INITIAL, 0, None, since)  # type: ignore[arg-type]


def _delivery(row: Any, sealer: Sealer) -> DeliveryView:
    """From (backend, state, attempts, last_error, updated_at, backend_id, id,
    merged_into, the state of the delivery it was merged into)."""
    return DeliveryView(
        backend=row[0],
        state=row[1],
        attempts=row[2],
        last_error=open_error(sealer, row[6], row[3]),
        updated_at=row[4],
        backend_id=row[5],
        merged_into=row[7],
        carrier_state=row[8],
    )


def get_request(request_id: str, sealer: Sealer) -> Plan[RequestView | None]:
    head = yield FetchRow("request_head", (request_id,))
    if head is None:
        return None
    writes = yield Fetch("request_writes", (request_id,))
    by_write: dict[int, list[DeliveryView]] = {w[0]: [] for w in writes}
    for d in (yield Fetch("request_deliveries", (request_id,))):
        by_write[d[0]].append(_delivery(d[1:], sealer))
    since, targets = head[1], as_list(head[2])
    return RequestView(
        request_id=request_id,
        app=head[0],
        received_at=since,
        targets=targets,
        profiles=[
            ProfileWriteView(w[2], w[1], by_write[w[0]] or [waiting(t, since) for t in targets])
            for w in writes
        ],
        lane=head[3],
        resend=bool(head[4]),
    )


def get_profile(external_id: str, sealer: Sealer) -> Plan[ProfileView | None]:
    latest = yield FetchRow("latest_write", (external_id,))
    if latest is None:
        return None
    rows = yield Fetch("latest_deliveries", (external_id,))
    deliveries = [_delivery(r, sealer) for r in rows]
    # Writes not expanded yet are newer than every delivery made so far.
    deliveries += [
        waiting(t, r[1], r[2])
        for r in (yield Fetch("unexpanded_targets", (external_id,)))
        for t in as_list(r[0])
    ]
    ids = yield Fetch("backend_ids_of", (external_id,))
    return ProfileView(
        external_id=external_id,
        last_request_id=latest[0],
        updated_at=latest[2],
        profile=open_profile(sealer, latest[1], latest[0], latest[3]),
        backends={d.backend: d for d in deliveries},
        backend_ids={r[0]: r[1] for r in ids},
        payload=latest[4] or "stored",
    )
