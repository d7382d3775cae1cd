"""A database as main's store left it before the store redesign (issue 18):
the schema of SQLite migrations 0001-0011 and PostgreSQL 0001-0010, holding
deliveries in every state a running gateway leaves behind.

Frozen on purpose: every row is written with raw SQL against that schema,
never through the store's code, so that this stays a true picture of the old
layout whatever the store (and its accept path) becomes. Edit it only if the
old layout itself was described wrongly; a new layout gets a new fixture.

What it holds (three requests, eight profile writes, six people, every write
sent to ocamba, omneo and import_batch in that order):

| write | person      | request | ocamba      | omneo       | import_batch |
|-------|-------------|---------|-------------|-------------|--------------|
| 1     | upg-known   | 1, pos 0| accepted    | confirmed   | confirmed    |
| 2     | upg-twice   | 1, pos 1| retrying    | pending     | in_flight    |
| 3     | upg-dead    | 1, pos 2| dead        | dead        | failed       |
| 4     | upg-twice   | 2, pos 0| pending     | pending     | pending      |
| 5     | upg-flight  | 2, pos 1| in_flight   | in_flight   | retrying     |
| 6     | upg-waiting | 2, pos 2| confirmed   | accepted    | confirmed    |
| 7     | upg-known   | 3, pos 0| pending     | pending     | pending      |
| 8     | upg-fresh   | 3, pos 1| pending     | pending     | pending      |

`in_flight` rows hold a lease of a worker that died, expired; `retrying` rows
are due; the `accepted` Omneo delivery of write 6 waits for its webhook under
the match key Omneo's correlation uses (the email, in clear: no encryption
key); upg-known and upg-waiting have the backend ids their confirmed
deliveries got. Bodies are plaintext msgspec JSON (key_id NULL), as stored
without GATEWAY_ENCRYPTION_KEYS. Each write's `attributes.tier` is unique
(`<person>#<n>`), so a test can tell which write a backend received.

Timestamps are relative to the `now` given, so the accepted delivery is
recent enough not to be swept to `unconfirmed` and the due ones are due.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import asyncpg
import msgspec

from gateway.store import migrations

# The newest migration of each engine on main before the redesign: the old
# layout this fixture is written against.
SQLITE_PRE_REDESIGN_SCHEMA = 11
POSTGRES_PRE_REDESIGN_SCHEMA = 10

TARGETS = ("ocamba", "omneo", "import_batch")
DEAD_OWNER = "gw-old-host:4242:worker-0"


@dataclass(frozen=True)
class OldRequest:
    id: str
    app: str
    age: float  # seconds before `now`
    idempotency_key: str | None = None


@dataclass(frozen=True)
class OldWrite:
    id: int
    request_id: str
    position: int
    external_id: str
    profile: dict[str, object]  # as stored, msgspec JSON with no defaults

    @property
    def tier(self) -> str:
        attributes = self.profile["attributes"]
        assert isinstance(attributes, dict)
        return str(attributes["tier"])

    @property
    def body(self) -> bytes:
        return json.dumps(self.profile, separators=(",", ":")).encode()


@dataclass(frozen=True)
class OldDelivery:
    id: int
    write_id: int
    backend: str
    state: str
    attempts: int = 0
    last_error: str | None = None
    due: float = 0.0  # next_attempt_at - now
    lease: float | None = None  # lease_expires_at - now (in_flight only)
    accepted: float | None = None  # accepted_at - now
    confirmed: float | None = None  # confirmed_at - now
    match_key: str | None = None


R1 = OldRequest("0f0e0d0c0b0a49f8a1b2c3d4e5f60001", "crm", 3600)
R2 = OldRequest("0f0e0d0c0b0a49f8a1b2c3d4e5f60002", "shop", 1800)
R3 = OldRequest("0f0e0d0c0b0a49f8a1b2c3d4e5f60003", "crm", 600, idempotency_key="upg-idem-3")
REQUESTS = (R1, R2, R3)


def _profile(
    external_id: str, n: int, email: str, phone: str | None = None, **more: object
) -> dict[str, object]:
    """A body byte for byte as msgspec encoded a NormalizedProfile: fields in
    declaration order, defaults left out, the derived `phone_country` last."""
    body: dict[str, object] = {"external_id": external_id, "email": email}
    if phone is not None:
        body["phone"] = phone
    body.update(more)
    body["attributes"] = {"tier": f"{external_id}#{n}"}
    if phone is not None:
        body["phone_country"] = "AU"
    return body


PHONE = {"phone": "+61412345678"}
WRITES = (
    OldWrite(1, R1.id, 0, "upg-known", _profile("upg-known", 1, "known@example.com")),
    OldWrite(2, R1.id, 1, "upg-twice", _profile("upg-twice", 1, "twice@example.com", **PHONE)),
    OldWrite(3, R1.id, 2, "upg-dead", _profile("upg-dead", 1, "dead@example.com")),
    OldWrite(4, R2.id, 0, "upg-twice", _profile("upg-twice", 2, "twice@example.com", **PHONE)),
    OldWrite(5, R2.id, 1, "upg-flight", _profile("upg-flight", 1, "flight@example.com")),
    OldWrite(6, R2.id, 2, "upg-waiting", _profile("upg-waiting", 1, "waiting@example.com")),
    OldWrite(
        7,
        R3.id,
        0,
        "upg-known",
        _profile("upg-known", 2, "known@example.com", first_name="Kim", last_name="Known"),
    ),
    OldWrite(8, R3.id, 1, "upg-fresh", _profile("upg-fresh", 1, "fresh@example.com")),
)
WRITE = {w.id: w for w in WRITES}


def _d(write_id: int, backend: str, state: str, **kw: object) -> OldDelivery:
    # Accept wrote one row per target in TARGETS order, ids in write order.
    delivery_id = (write_id - 1) * len(TARGETS) + TARGETS.index(backend) + 1
    return OldDelivery(delivery_id, write_id, backend, state, **kw)  # type: ignore[arg-type]


_DEAD_ERROR = "gave up after 8 attempts: ocamba: HTTP 503 Service unavailable."
DELIVERIES = (
    # write 1: delivered before the upgrade, ids recorded below.
    _d(1, "ocamba", "accepted", attempts=1, due=-3600, accepted=-3500),
    _d(1, "omneo", "confirmed", attempts=1, due=-3600, accepted=-3500, confirmed=-3400,
       match_key="known@example.com"),
    _d(1, "import_batch", "confirmed", attempts=1, due=-3600, accepted=-3500, confirmed=-3500),
    # write 2: a retry that is due, one never claimed, a lease its worker died with.
    _d(2, "ocamba", "retrying", attempts=2, last_error="ocamba: HTTP 503 Service unavailable.",
       due=-5),
    _d(2, "omneo", "pending", due=-3600),
    _d(2, "import_batch", "in_flight", attempts=1, due=-3600, lease=-30),
    # write 3: given up on, and refused for good.
    _d(3, "ocamba", "dead", attempts=8, last_error=_DEAD_ERROR, due=-60),
    _d(3, "omneo", "dead", attempts=8, last_error="gave up after 8 attempts: omneo: timeout",
       due=-60),
    _d(3, "import_batch", "failed", attempts=1, last_error="import_batch: error 106 unknown field",
       due=-3600),
    # write 4: the second write of upg-twice, held back behind write 2.
    _d(4, "ocamba", "pending", due=-1800),
    _d(4, "omneo", "pending", due=-1800),
    _d(4, "import_batch", "pending", due=-1800),
    # write 5: claimed by a worker that died; one due retry.
    _d(5, "ocamba", "in_flight", attempts=1, due=-1800, lease=-10),
    _d(5, "omneo", "in_flight", attempts=1, due=-1800, lease=-10),
    _d(5, "import_batch", "retrying", attempts=3, last_error="import_batch: HTTP 502", due=-1),
    # write 6: Omneo took it and its webhook has not come yet.
    _d(6, "ocamba", "confirmed", attempts=1, due=-1800, accepted=-1700, confirmed=-1700),
    _d(6, "omneo", "accepted", attempts=1, due=-1800, accepted=-120,
       match_key="waiting@example.com"),
    _d(6, "import_batch", "confirmed", attempts=1, due=-1800, accepted=-1700, confirmed=-1700),
    # writes 7 and 8: accepted, not claimed yet.
    *(_d(w, b, "pending", due=-600) for w in (7, 8) for b in TARGETS),
)  # fmt: skip

# (external_id, backend) -> the id the backend gave the person.
BACKEND_IDS = {
    ("upg-known", "ocamba"): "700000000000000001",
    ("upg-known", "omneo"): "9001",
    ("upg-known", "import_batch"): "a1a1a1a1a1a1a1a1a1a1a1a1",
    ("upg-waiting", "ocamba"): "700000000000000006",
    ("upg-waiting", "import_batch"): "a6a6a6a6a6a6a6a6a6a6a6a6",
}
# The webhook that confirmed write 1's Omneo delivery.
WEBHOOK_BODY = b'{"id": 9001, "email": "known@example.com", "updated_at": "2026-12-01T10:00:00Z"}'
WEBHOOK_HASH = "5b0c6c1c1e2d3f4a5b6c7d8e9f000102030405060708090a0b0c0d0e0f101112"

# Open deliveries: the ones an upgraded gateway still has to send.
OPEN = ("pending", "retrying", "in_flight")


def to_send(backend: str) -> list[OldWrite]:
    """The writes `backend` has yet to receive, in write order."""
    return [WRITE[d.write_id] for d in DELIVERIES if d.backend == backend and d.state in OPEN]


def not_to_send(backend: str) -> list[OldWrite]:
    """The writes `backend` must never receive again (delivered, or ended)."""
    return [WRITE[d.write_id] for d in DELIVERIES if d.backend == backend and d.state not in OPEN]


def _at(now: float, offset: float | None) -> float | None:
    return None if offset is None else now + offset


def _updated_at(d: OldDelivery, created: float, now: float) -> float:
    """When the state was last written: the answer recorded, the lease taken
    (a 60 s lease), or the retry scheduled."""
    if d.confirmed is not None or d.accepted is not None:
        return now + (d.confirmed if d.confirmed is not None else d.accepted or 0.0)
    if d.lease is not None:
        return now + d.lease - 60
    if d.attempts:
        return min(now + d.due - 1, now - 1)
    return created


def _delivery_row(d: OldDelivery, now: float) -> tuple[object, ...]:
    w = WRITE[d.write_id]
    created = now - next(r.age for r in REQUESTS if r.id == w.request_id)
    in_flight = d.state == "in_flight"
    return (
        d.id,
        d.write_id,
        w.external_id,
        d.backend,
        d.state,
        d.attempts,
        d.last_error,
        now + d.due,
        DEAD_OWNER if in_flight else None,
        _at(now, d.lease) if in_flight else None,
        created,
        _updated_at(d, created, now),
        _at(now, d.accepted),
        _at(now, d.confirmed),
        d.match_key,
    )


_DELIVERY_COLUMNS = (
    "id, write_id, external_id, backend, state, attempts, last_error, next_attempt_at,"
    " lease_owner, lease_expires_at, created_at, updated_at, accepted_at, confirmed_at, match_key"
)


def write_sqlite(conn: sqlite3.Connection, now: float) -> None:
    """Fill a database migrated to SQLITE_PRE_REDESIGN_SCHEMA, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    for r in REQUESTS:
        count = sum(1 for w in WRITES if w.request_id == r.id)
        conn.execute(
            "INSERT INTO requests (id, app, received_at, targets, profile_count)"
            " VALUES (?, ?, ?, ?, ?)",
            (r.id, r.app, now - r.age, json.dumps(list(TARGETS)), count),
        )
        if r.idempotency_key is not None:
            conn.execute(
                "INSERT INTO idempotency_keys (app, key, body_hash, request_id, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (r.app, r.idempotency_key, "9" * 64, r.id, now - r.age),
            )
    for w in WRITES:
        age = next(r.age for r in REQUESTS if r.id == w.request_id)
        conn.execute(
            "INSERT INTO profile_writes (id, request_id, position, external_id, body, key_id,"
            " removed, removed_at, received_at) VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, ?)",
            (w.id, w.request_id, w.position, w.external_id, w.body, now - age),
        )
    marks = ", ".join("?" * 15)
    conn.executemany(
        f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES ({marks})",
        [_delivery_row(d, now) for d in DELIVERIES],
    )
    conn.executemany(
        "INSERT INTO backend_ids (external_id, backend, backend_id, updated_at)"
        " VALUES (?, ?, ?, ?)",
        [(e, b, i, now - 1700) for (e, b), i in BACKEND_IDS.items()],
    )
    conn.execute(
        "INSERT INTO webhook_events (id, source, event, body_hash, dedup_key, body, key_id,"
        " backend_id, match_key, event_time, received_at, state, confirmed, applied_at)"
        " VALUES (1, 'omneo', 'profile.created', ?, ?, ?, NULL, '9001', 'known@example.com',"
        " ?, ?, 'applied', 1, ?)",
        (WEBHOOK_HASH, WEBHOOK_HASH, WEBHOOK_BODY, now - 3450, now - 3400, now - 3400),
    )
    conn.execute("COMMIT")


async def write_postgres(conn: asyncpg.Connection, now: float) -> None:
    """Fill a database migrated to POSTGRES_PRE_REDESIGN_SCHEMA, in one transaction.
    Ids are given (OVERRIDING SYSTEM VALUE) and the identity sequences then set
    past them, as if the rows had taken them."""
    async with conn.transaction():
        for r in REQUESTS:
            count = sum(1 for w in WRITES if w.request_id == r.id)
            await conn.execute(
                "INSERT INTO requests (id, app, received_at, targets, profile_count)"
                " VALUES ($1, $2, $3, $4, $5)",
                r.id,
                r.app,
                now - r.age,
                list(TARGETS),
                count,
            )
            if r.idempotency_key is not None:
                await conn.execute(
                    "INSERT INTO idempotency_keys (app, key, body_hash, request_id, created_at)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    r.app,
                    r.idempotency_key,
                    "9" * 64,
                    r.id,
                    now - r.age,
                )
        people: dict[str, int] = {}
        for w in WRITES:
            people[w.external_id] = people.get(w.external_id, 0) + 1
        await conn.executemany(
            "INSERT INTO people (external_id, writes, updated_at) VALUES ($1, $2, $3)",
            [(e, n, now - 600) for e, n in people.items()],
        )
        await conn.executemany(
            "INSERT INTO profile_writes (id, request_id, position, external_id, body, key_id,"
            " removed, removed_at, received_at) OVERRIDING SYSTEM VALUE"
            " VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL, $6)",
            [
                (
                    w.id,
                    w.request_id,
                    w.position,
                    w.external_id,
                    w.body,
                    now - next(r.age for r in REQUESTS if r.id == w.request_id),
                )
                for w in WRITES
            ],
        )
        marks = ", ".join(f"${n}" for n in range(1, 16))
        await conn.executemany(
            f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) OVERRIDING SYSTEM VALUE"
            f" VALUES ({marks})",
            [_delivery_row(d, now) for d in DELIVERIES],
        )
        await conn.executemany(
            "INSERT INTO backend_ids (external_id, backend, backend_id, updated_at)"
            " VALUES ($1, $2, $3, $4)",
            [(e, b, i, now - 1700) for (e, b), i in BACKEND_IDS.items()],
        )
        await conn.execute(
            "INSERT INTO webhook_events (id, source, event, body_hash, dedup_key, body, key_id,"
            " backend_id, match_key, event_time, received_at, state, confirmed, applied_at)"
            " OVERRIDING SYSTEM VALUE VALUES (1, 'omneo', 'profile.created', $1, $1, $2, NULL,"
            " '9001', 'known@example.com', $3, $4, 'applied', 1, $4)",
            WEBHOOK_HASH,
            WEBHOOK_BODY,
            now - 3450,
            now - 3400,
        )
        for table in ("profile_writes", "deliveries", "webhook_events"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )


def decoded(write: OldWrite) -> object:
    """The stored body as plain data, to compare with what the API shows."""
    return msgspec.json.decode(write.body)


def build_sqlite(path: str, now: float) -> None:
    """An SQLite file with the old schema (the migrations up to the pinned
    one; the .sql files never change once shipped) and the old rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        migrations.apply_sqlite(conn, up_to=SQLITE_PRE_REDESIGN_SCHEMA)
        write_sqlite(conn, now)
    finally:
        conn.close()


async def build_postgres(url: str, now: float) -> None:
    """The same on an empty PostgreSQL database."""
    conn = await asyncpg.connect(url)
    try:
        await migrations.apply_postgres(conn, up_to=POSTGRES_PRE_REDESIGN_SCHEMA)
        await write_postgres(conn, now)
    finally:
        await conn.close()


def applied_sqlite(path: str) -> set[int]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    finally:
        conn.close()


async def applied_postgres(url: str) -> set[int]:
    conn = await asyncpg.connect(url)
    try:
        return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    finally:
        await conn.close()


def every_version(dialect: str) -> set[int]:
    """What an upgraded database must have applied: every migration file this
    checkout ships, whatever the newest is by then."""
    return {version for version, _, _ in migrations.migration_files(dialect)}


def old_versions(dialect: str) -> set[int]:
    pinned = SQLITE_PRE_REDESIGN_SCHEMA if dialect == "sqlite" else POSTGRES_PRE_REDESIGN_SCHEMA
    return {v for v in every_version(dialect) if v <= pinned}
