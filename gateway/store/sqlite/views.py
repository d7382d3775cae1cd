"""What the status endpoints read on SQLite: a request, and a person's latest state.

A request not yet expanded (gateway/store/expand.py) has no delivery rows: its
profiles show one `pending` delivery per target until it is.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from gateway.crypto import Sealer
from gateway.store import pii
from gateway.store.base import DeliveryView, ProfileView, ProfileWriteView, RequestView

# A person's writes: through their deliveries, or still waiting for expand.
PERSON_WRITES = """
SELECT write_id FROM deliveries WHERE external_id = ?1
UNION
SELECT w.id FROM expand_queue q JOIN profile_writes w ON w.request_id = q.request_id
WHERE w.external_id = ?1
"""


UNEXPANDED_TARGETS = """
SELECT r.targets, w.received_at FROM expand_queue q
JOIN requests r ON r.id = q.request_id
JOIN profile_writes w ON w.request_id = q.request_id
WHERE w.external_id = ?1 ORDER BY q.seq
"""


def waiting(backend: str, since: float) -> DeliveryView:
    """What a delivery not made yet looks like."""
    return DeliveryView(backend, "pending", 0, None, since)  # type: ignore[arg-type]


_DELIVERY_COLUMNS = (
    "d.backend, d.state, d.attempts, d.last_error, d.updated_at, b.backend_id, d.id"
    " FROM deliveries d LEFT JOIN backend_ids b"
    " ON b.external_id = d.external_id AND b.backend = d.backend"
)


def _delivery(row: tuple[Any, ...], sealer: Sealer) -> DeliveryView:
    return DeliveryView(
        backend=row[0],
        state=row[1],
        attempts=row[2],
        last_error=pii.open_error(sealer, row[6], row[3]),
        updated_at=row[4],
        backend_id=row[5],
    )


def get_request(conn: sqlite3.Connection, request_id: str, sealer: Sealer) -> RequestView | None:
    row = conn.execute(
        "SELECT app, received_at, targets FROM requests WHERE id = ?", (request_id,)
    ).fetchone()
    if row is None:
        return None
    writes = conn.execute(
        "SELECT id, position, external_id FROM profile_writes WHERE request_id = ?"
        " ORDER BY position",
        (request_id,),
    ).fetchall()
    by_write: dict[int, list[DeliveryView]] = {w[0]: [] for w in writes}
    for d in conn.execute(
        f"SELECT d.write_id, {_DELIVERY_COLUMNS}"
        " JOIN profile_writes w ON w.id = d.write_id WHERE w.request_id = ? ORDER BY d.id",
        (request_id,),
    ):
        by_write[d[0]].append(_delivery(d[1:], sealer))
    targets = json.loads(row[2])
    return RequestView(
        request_id=request_id,
        app=row[0],
        received_at=row[1],
        targets=targets,
        profiles=[
            ProfileWriteView(w[2], w[1], by_write[w[0]] or [waiting(t, row[1]) for t in targets])
            for w in writes
        ],
    )


def get_profile(conn: sqlite3.Connection, external_id: str, sealer: Sealer) -> ProfileView | None:
    latest = conn.execute(
        "SELECT request_id, body, received_at, position, removed FROM profile_writes"
        f" WHERE id = (SELECT MAX(write_id) FROM ({PERSON_WRITES}))",
        (external_id,),
    ).fetchone()
    if latest is None:
        return None
    deliveries = [
        _delivery(r, sealer)
        for r in conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} WHERE d.id IN"
            " (SELECT MAX(id) FROM deliveries WHERE external_id = ? GROUP BY backend)",
            (external_id,),
        )
    ]
    # Writes not expanded yet are newer than every delivery made so far.
    deliveries += [
        waiting(t, received)
        for targets, received in conn.execute(UNEXPANDED_TARGETS, (external_id,))
        for t in json.loads(targets)
    ]
    ids = dict(
        conn.execute(
            "SELECT backend, backend_id FROM backend_ids WHERE external_id = ?", (external_id,)
        ).fetchall()
    )
    return ProfileView(
        external_id=external_id,
        last_request_id=latest[0],
        updated_at=latest[2],
        profile=pii.open_profile(sealer, latest[1], latest[0], latest[3]),
        backends={d.backend: d for d in deliveries},
        backend_ids=ids,
        payload=latest[4] or "stored",
    )
