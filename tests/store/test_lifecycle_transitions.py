"""Every state change the store really performs is in lifecycle.TRANSITIONS.

A trigger on deliveries logs each insert and each change of state, on both
engines; the tests drive deliveries through the store's own operations (claim,
record, webhooks, the unconfirmed sweep, replay, erasure) and hold every logged
change to the table. Fresh databases: the trigger must not reach other tests.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from gateway import lifecycle
from gateway.lifecycle import OUTCOME_STATE, RETRY_EXHAUSTED, DeliveryState
from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import DeliveryResult, NewRequest, Store, WebhookEvent
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.store import pg

Change = tuple[DeliveryState | None, DeliveryState]  # (None, state): written as

SQLITE_LOG = """
CREATE TABLE state_log (id INTEGER PRIMARY KEY, before TEXT, after TEXT NOT NULL);
CREATE TRIGGER state_log_insert AFTER INSERT ON deliveries
BEGIN INSERT INTO state_log (before, after) VALUES (NULL, NEW.state); END;
CREATE TRIGGER state_log_update AFTER UPDATE OF state ON deliveries
WHEN OLD.state IS NOT NEW.state
BEGIN INSERT INTO state_log (before, after) VALUES (OLD.state, NEW.state); END;
"""
POSTGRES_LOG = """
CREATE TABLE state_log (id bigserial PRIMARY KEY, before text, after text NOT NULL);
CREATE FUNCTION log_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO state_log (before, after)
    VALUES (CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END, NEW.state);
    RETURN NULL;
END $$;
CREATE TRIGGER state_log_insert AFTER INSERT ON deliveries
    FOR EACH ROW EXECUTE FUNCTION log_state();
CREATE TRIGGER state_log_update AFTER UPDATE OF state ON deliveries
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION log_state();
"""
READ_LOG = "SELECT before, after FROM state_log ORDER BY id"

Logged = tuple[Store, Callable[[], Awaitable[list[Change]]]]


@pytest.fixture(params=["sqlite", "postgres"])
async def logged(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Logged]:
    """An open store whose state changes are logged, and a reader of the log."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        store: Store = SQLiteStore.from_url(f"sqlite:///{path}")
        await store.open()
        side = sqlite3.connect(path, isolation_level=None, timeout=30)
        side.executescript(SQLITE_LOG)

        async def read_sqlite() -> list[Change]:
            return list(side.execute(READ_LOG).fetchall())

        yield store, read_sqlite
        await store.close()
        side.close()
        return
    with pg.fresh_database("gateway_lifecycle") as url:
        store = PostgresStore(url)
        await store.open()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(POSTGRES_LOG)  # no arguments: run as one script
        finally:
            await conn.close()

        async def read_postgres() -> list[Change]:
            return [(r["before"], r["after"]) for r in await pg.execute(url, READ_LOG)]

        yield store, read_postgres
        await store.close()


async def write(store: Store, external_id: str, backend: Backend = "omneo") -> None:
    await store.accept(
        NewRequest(
            request_id=f"r-{external_id}-{time.monotonic_ns()}",
            app="crm",
            targets=[backend],
            profiles=[NormalizedProfile(external_id=external_id, email=f"{external_id}@x.test")],
            received_at=time.time(),
        )
    )


async def claim_one(store: Store, backend: Backend = "omneo") -> int:
    [claim] = await store.claim(backend, 10, "w", 60)
    return claim.delivery_id


async def settle(
    store: Store,
    delivery: int,
    state: DeliveryState,
    next_attempt_at: float | None = None,
    match_key: str | None = None,
) -> None:
    """Record `state` for a delivery worker "w" holds, as the dispatcher does."""
    error = None if state in lifecycle.DELIVERED else "x"
    result = DeliveryResult(
        delivery, state, error, next_attempt_at=next_attempt_at, match_key=match_key
    )
    assert await store.record("w", [result]) == 1


def later() -> float:
    """A webhook's arrival time: it confirms only what was accepted before it
    arrived, so it is dated a second on instead of sleeping."""
    return time.time() + 1


async def drive(store: Store) -> None:
    """pending -> in_flight -> accepted -> confirmed (Omneo, by webhook)."""
    await write(store, "a")
    await settle(store, await claim_one(store), OUTCOME_STATE["accepted"], match_key="a@x.test")
    await store.save_webhook(
        WebhookEvent("omneo", "profile.created", "h-a", b"{}", later(), "1", "a@x.test")
    )
    [applied] = await store.apply_webhooks("omneo")
    assert applied.result == "applied"

    # accepted -> unconfirmed (the sweep) -> pending (replay) -> in_flight.
    await write(store, "b")
    await settle(store, await claim_one(store), OUTCOME_STATE["accepted"], match_key="b@x.test")
    assert await store.mark_unconfirmed("omneo", time.time() + 1) == 1
    assert len((await store.replay(["unconfirmed"])).requeued) == 1
    delivery = await claim_one(store)

    # in_flight -> retrying -> in_flight -> dead -> pending -> in_flight -> failed -> pending.
    await settle(store, delivery, OUTCOME_STATE["retry"], next_attempt_at=time.time())
    assert await claim_one(store) == delivery
    await settle(store, delivery, RETRY_EXHAUSTED)
    assert (await store.replay(["dead"])).requeued == [delivery]
    await settle(store, await claim_one(store), OUTCOME_STATE["failed"])
    assert (await store.replay(["failed"])).requeued == [delivery]

    # pending -> in_flight -> retrying (not due) -> pending, by an operator's replay.
    await settle(store, await claim_one(store), "retrying", next_attempt_at=time.time() + 600)
    assert (await store.replay(["retrying"])).requeued == [delivery]

    # in_flight -> confirmed: a backend's synchronous answer (import_batch).
    await write(store, "c", "import_batch")
    await settle(store, await claim_one(store, "import_batch"), OUTCOME_STATE["confirmed"])

    # A lease taken over is no change of state: in_flight stays in_flight.
    await write(store, "d", "ocamba")
    await store.claim("ocamba", 10, "gone", lease_seconds=0.0)
    assert len(await store.claim("ocamba", 10, "w", 60)) == 1

    # pending -> merged: a later queued write rides along with the claimed one
    # (on import_batch: omneo still holds b's replayed delivery).
    await write(store, "m", "import_batch")
    await write(store, "m", "import_batch")
    [carrier] = await store.claim("import_batch", 10, "w", 60)
    assert len(carrier.carries) == 1
    await settle(store, carrier.delivery_id, OUTCOME_STATE["accepted"])

    # retrying -> merged: an older write replayed is claimed while a newer one
    # waits to be retried; the newer one rides along.
    await write(store, "n", "import_batch")
    older = await claim_one(store, "import_batch")
    await settle(store, older, RETRY_EXHAUSTED)
    await write(store, "n", "import_batch")
    newer = await claim_one(store, "import_batch")
    await settle(store, newer, OUTCOME_STATE["retry"], next_attempt_at=time.time() + 600)
    assert (await store.replay(["dead"], delivery_id=older)).requeued == [older]
    [carrier] = await store.claim("import_batch", 10, "w", 60)
    assert (carrier.delivery_id, carrier.carries) == (older, (newer,))
    await settle(store, older, OUTCOME_STATE["accepted"])

    # Erasure cancels the open ones: pending and in_flight -> erased; the
    # pending one replayed above (b) and the leased one (d) are erased with them.
    assert await store.erase_profile("b") is not None
    assert await store.erase_profile("d") is not None

    # Erased before its deliveries were made: expand makes them erased.
    await store.accept(NewRequest("r-e", "crm", ["omneo"], [NormalizedProfile("e")], time.time()))
    assert await store.erase_profile("e") is not None
    assert await store.expand() == 1


EXPECTED: set[Change] = {
    (None, "pending"),
    ("pending", "in_flight"),
    ("in_flight", "accepted"),
    ("accepted", "confirmed"),
    ("accepted", "unconfirmed"),
    ("unconfirmed", "pending"),
    ("in_flight", "retrying"),
    ("retrying", "in_flight"),
    ("in_flight", "dead"),
    ("dead", "pending"),
    ("in_flight", "failed"),
    ("failed", "pending"),
    ("retrying", "pending"),
    ("in_flight", "confirmed"),
    ("pending", "erased"),
    ("in_flight", "erased"),
    (None, "erased"),
    ("pending", "merged"),
    ("retrying", "merged"),
}


@pytest.mark.anyio
async def test_every_change_the_store_makes_is_in_the_table(logged: Logged) -> None:
    store, read = logged
    await drive(store)
    changes = await read()
    refused = [
        (before, after)
        for before, after in changes
        if (
            after not in lifecycle.CREATED
            if before is None
            else not lifecycle.allowed(before, after)
        )
    ]
    assert refused == []
    # The drive saw what it meant to: not a vacuous pass.
    assert set(changes) == EXPECTED


@pytest.mark.anyio
async def test_a_late_webhook_confirms_an_unconfirmed_delivery(logged: Logged) -> None:
    store, read = logged
    await write(store, "e")
    await settle(store, await claim_one(store), "accepted", match_key="e@x.test")
    await store.mark_unconfirmed("omneo", time.time() + 1)
    await store.save_webhook(
        WebhookEvent("omneo", "profile.created", "h-e", b"{}", later(), "2", "e@x.test")
    )
    await store.apply_webhooks("omneo")
    changes = await read()
    assert changes[-2:] == [("accepted", "unconfirmed"), ("unconfirmed", "confirmed")]
    assert all(lifecycle.allowed(b, a) for b, a in changes if b is not None)


@pytest.mark.anyio
async def test_an_unsendable_claim_fails_through_an_allowed_change(logged: Logged) -> None:
    # The one path the drive above cannot reach through the store's API: a
    # claimed delivery whose payload is gone (a replay racing a purge) is
    # settled as failed at claim time.
    store, read = logged
    await write(store, "f")
    empty = "UPDATE profile_writes SET body = ?"
    if isinstance(store, PostgresStore):
        await pg.execute(store.dsn, empty.replace("?", "$1"), b"")
    else:
        assert isinstance(store, SQLiteStore)
        side = sqlite3.connect(store.path, isolation_level=None, timeout=30)
        side.execute(empty, (b"",))
        side.close()
    assert await store.claim("omneo", 10, "w", 60) == []
    assert (await read())[-2:] == [("pending", "in_flight"), ("in_flight", "failed")]
