"""What the status endpoints read on PostgreSQL: a request, and a person's latest state."""

from __future__ import annotations

from typing import Any

from gateway.crypto import PLAINTEXT, Sealer
from gateway.store.base import DeliveryView, ProfileView, ProfileWriteView, RequestView
from gateway.store.pii import open_error, open_profile
from gateway.store.postgres.db import Conn

# A person's writes: through their deliveries, or still waiting for expand.
PERSON_WRITES = """
SELECT write_id FROM deliveries WHERE external_id = $1
UNION
SELECT w.id FROM expand_queue q JOIN profile_writes w ON w.request_id = q.request_id
WHERE w.external_id = $1
"""


UNEXPANDED_TARGETS = """
SELECT r.targets, w.received_at FROM expand_queue q
JOIN requests r ON r.id = q.request_id
JOIN profile_writes w ON w.request_id = q.request_id
WHERE w.external_id = $1 ORDER BY q.seq
"""


def waiting(backend: str, since: float) -> DeliveryView:
    """What a delivery not made yet looks like (gateway/store/expand.py)."""
    return DeliveryView(backend, "pending", 0, None, since)  # type: ignore[arg-type]


_DELIVERY_COLUMNS = (
    "d.backend, d.state, d.attempts, d.last_error, d.updated_at, b.backend_id, d.id"
    " FROM deliveries d LEFT JOIN backend_ids b"
    " ON b.external_id = d.external_id AND b.backend = d.backend"
)


def _delivery(row: Any, sealer: Sealer) -> DeliveryView:
    return DeliveryView(
        backend=row["backend"],
        state=row["state"],
        attempts=row["attempts"],
        last_error=open_error(sealer, row["id"], row["last_error"]),
        updated_at=row["updated_at"],
        backend_id=row["backend_id"],
    )


async def get_request(
    conn: Conn, request_id: str, sealer: Sealer = PLAINTEXT
) -> RequestView | None:
    """Run in one read-only snapshot, so that its reads agree."""
    head = await conn.fetchrow(
        "SELECT app, received_at, targets FROM requests WHERE id = $1", request_id
    )
    if head is None:
        return None
    writes = await conn.fetch(
        "SELECT id, position, external_id FROM profile_writes WHERE request_id = $1"
        " ORDER BY position",
        request_id,
    )
    by_write: dict[int, list[DeliveryView]] = {w["id"]: [] for w in writes}
    for d in await conn.fetch(
        f"SELECT d.write_id, {_DELIVERY_COLUMNS}"
        " JOIN profile_writes w ON w.id = d.write_id WHERE w.request_id = $1 ORDER BY d.id",
        request_id,
    ):
        by_write[d["write_id"]].append(_delivery(d, sealer))
    since, targets = head["received_at"], head["targets"]
    return RequestView(
        request_id=request_id,
        app=head["app"],
        received_at=since,
        targets=targets,
        profiles=[
            ProfileWriteView(
                w["external_id"],
                w["position"],
                by_write[w["id"]] or [waiting(t, since) for t in targets],
            )
            for w in writes
        ],
    )


async def get_profile(
    conn: Conn, external_id: str, sealer: Sealer = PLAINTEXT
) -> ProfileView | None:
    """Run in one read-only snapshot, so that its reads agree."""
    latest = await conn.fetchrow(
        "SELECT request_id, body, received_at, position, removed FROM profile_writes"
        f" WHERE id = (SELECT max(write_id) FROM ({PERSON_WRITES}) p(write_id))",
        external_id,
    )
    if latest is None:
        return None
    deliveries = [
        _delivery(r, sealer)
        for r in await conn.fetch(
            f"SELECT DISTINCT ON (d.backend) {_DELIVERY_COLUMNS}"
            " WHERE d.external_id = $1 ORDER BY d.backend, d.id DESC",
            external_id,
        )
    ]
    # Writes not expanded yet are newer than every delivery made so far.
    deliveries += [
        waiting(t, r["received_at"])
        for r in await conn.fetch(UNEXPANDED_TARGETS, external_id)
        for t in r["targets"]
    ]
    ids = await conn.fetch(
        "SELECT backend, backend_id FROM backend_ids WHERE external_id = $1", external_id
    )
    return ProfileView(
        external_id=external_id,
        last_request_id=latest["request_id"],
        updated_at=latest["received_at"],
        profile=open_profile(sealer, latest["body"], latest["request_id"], latest["position"]),
        backends={d.backend: d for d in deliveries},
        backend_ids={r["backend"]: r["backend_id"] for r in ids},
        payload=latest["removed"] or "stored",
    )
