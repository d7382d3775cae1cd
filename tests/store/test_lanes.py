"""Lanes in the queue: a claim takes `realtime` before `bulk` (or the order it
is given), expired leases before either, and never lets a person's later write
overtake an earlier one, whatever their lanes. On both engines, and on
PostgreSQL across two replicas."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.schema import Backend, Lane, NormalizedProfile
from gateway.store import migrations, queries
from gateway.store.base import Claim, DeliveryResult, NewRequest, Store
from gateway.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio

Replicas = tuple[PostgresStore, PostgresStore]


def request(rid: str, lane: Lane, *ids: str, targets: list[Backend] | None = None) -> NewRequest:
    return NewRequest(
        request_id=rid,
        app="crm",
        targets=targets or ["omneo"],
        profiles=[NormalizedProfile(external_id=i, first_name=rid) for i in ids],
        received_at=time.time(),
        lane=lane,
    )


def seen(claims: list[Claim]) -> list[tuple[str, str | None, Lane]]:
    return [(c.external_id, c.profile.first_name, c.lane) for c in claims]


async def test_realtime_is_claimed_before_older_bulk(store: Store) -> None:
    await store.accept(request("backfill", "bulk", "b1", "b2", "b3"))
    await store.accept(request("live", "realtime", "r1", "r2"))
    # The bulk writes are older, yet the real-time ones go first ...
    first = await store.claim("omneo", 3, "w", 60)
    assert seen(first) == [
        ("r1", "live", "realtime"),
        ("r2", "live", "realtime"),
        ("b1", "backfill", "bulk"),  # ... and bulk fills the rest of the batch
    ]
    assert seen(await store.claim("omneo", 10, "w", 60)) == [
        ("b2", "backfill", "bulk"),
        ("b3", "backfill", "bulk"),
    ]


async def test_bulk_first_when_asked_and_realtime_fills_or_takes_over(store: Store) -> None:
    await store.accept(request("live", "realtime", "r1", "r2"))
    await store.accept(request("backfill", "bulk", "b1"))
    bulk_first: tuple[Lane, ...] = ("bulk", "realtime")
    assert seen(await store.claim("omneo", 2, "w", 60, lanes=bulk_first)) == [
        ("b1", "backfill", "bulk"),
        ("r1", "live", "realtime"),
    ]
    # No bulk left: a bulk-first claim falls through to real-time.
    assert seen(await store.claim("omneo", 2, "w", 60, lanes=bulk_first)) == [
        ("r2", "live", "realtime")
    ]


async def test_a_claim_of_one_lane_leaves_the_other(store: Store) -> None:
    await store.accept(request("live", "realtime", "r1"))
    await store.accept(request("backfill", "bulk", "b1"))
    assert seen(await store.claim("omneo", 10, "w", 60, lanes=("bulk",))) == [
        ("b1", "backfill", "bulk")
    ]
    assert await store.claim("omneo", 10, "w", 60, lanes=("bulk",)) == []
    assert seen(await store.claim("omneo", 10, "w", 60, lanes=("realtime",))) == [
        ("r1", "live", "realtime")
    ]


async def test_expired_leases_come_first_whatever_their_lane(store: Store) -> None:
    await store.accept(request("backfill", "bulk", "b1"))
    [crashed] = await store.claim("omneo", 10, "dead-worker", lease_seconds=0.0)
    await store.accept(request("live", "realtime", "r1", "r2"))
    [retaken] = await store.claim("omneo", 1, "w", 60)
    assert (retaken.delivery_id, retaken.lane, retaken.attempts) == (crashed.delivery_id, "bulk", 2)
    assert [c.external_id for c in await store.claim("omneo", 10, "w", 60)] == ["r1", "r2"]


async def test_a_realtime_write_never_overtakes_an_earlier_bulk_one_of_the_same_person(
    store: Store,
) -> None:
    await store.accept(request("backfill", "bulk", "a", "b"))
    first = await store.claim("omneo", 10, "w", 60)
    assert seen(first) == [("a", "backfill", "bulk"), ("b", "backfill", "bulk")]
    await store.accept(request("live", "realtime", "a", "c"))
    # Real-time first, but live's write of "a" waits while backfill's is open:
    # only "c" goes.
    assert seen(await store.claim("omneo", 10, "w", 60)) == [("c", "live", "realtime")]
    # Held back while the earlier bulk write is open, in flight or retrying ...
    assert await store.claim("omneo", 10, "w", 60) == []
    a_bulk = next(c for c in first if c.external_id == "a")
    retry = DeliveryResult(a_bulk.delivery_id, "retrying", "503", next_attempt_at=0.0)
    await store.record("w", [retry])
    # ... and when the earlier one goes again, the later one rides inside it
    # (merging): never before it.
    [again] = await store.claim("omneo", 10, "w", 60)
    assert seen([again]) == [("a", "live", "bulk")]
    assert again.delivery_id == a_bulk.delivery_id and len(again.carries) == 1
    await store.record("w", [DeliveryResult(again.delivery_id, "accepted")])
    assert await store.claim("omneo", 10, "w", 60) == []


async def test_an_earlier_realtime_write_holds_a_later_bulk_one_back(store: Store) -> None:
    await store.accept(request("live", "realtime", "a"))
    await store.accept(request("backfill", "bulk", "a", "b"))
    claims = await store.claim("omneo", 10, "w", 60, lanes=("bulk", "realtime"))
    # Bulk first, but backfill's "a" waits behind live's, and rides in it
    # (merging): the realtime delivery carries the later bulk write.
    assert seen(claims) == [("b", "backfill", "bulk"), ("a", "backfill", "realtime")]
    assert [len(c.carries) for c in claims] == [0, 1]


async def test_lanes_are_per_backend(store: Store) -> None:
    await store.accept(request("backfill", "bulk", "b1", targets=["omneo", "ocamba"]))
    await store.accept(request("live", "realtime", "r1", targets=["ocamba"]))
    assert seen(await store.claim("omneo", 1, "w", 60)) == [("b1", "backfill", "bulk")]
    assert seen(await store.claim("ocamba", 1, "w", 60)) == [("r1", "live", "realtime")]


async def test_a_claim_names_one_or_both_lanes_each_once(store: Store) -> None:
    for bad in [(), ("bulk", "bulk"), ("realtime", "bulk", "realtime"), ("urgent",)]:
        with pytest.raises(ValueError, match="lanes"):
            await store.claim("omneo", 10, "w", 60, lanes=bad)  # type: ignore[arg-type]


def test_sqlite_walks_each_lane_of_the_due_index_in_order(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "plan.db")
    migrations.apply_sqlite(conn)
    plan = " | ".join(
        row[3]
        for row in conn.execute(
            "EXPLAIN QUERY PLAN " + queries.get("sqlite", "claim_due"),
            ("omneo", 0.0, 10, "realtime", 0.0),
        )
    )
    assert "deliveries_due_lane (backend=? AND lane=? AND next_attempt_at<?)" in plan, plan
    assert "deliveries_open_person" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # in index order: it stops at the limit


# -- PostgreSQL, two replicas --------------------------------------------------


async def test_two_replicas_take_realtime_first_and_nothing_twice(replicas: Replicas) -> None:
    a, b = replicas
    await a.accept(request("backfill", "bulk", *(f"b{i}" for i in range(60))))
    await b.accept(request("live", "realtime", *(f"r{i}" for i in range(60))))
    assert await a.expand() == 120
    taken: dict[str, list[Claim]] = {"a": [], "b": []}

    async def drain(store: PostgresStore, owner: str) -> None:
        while claims := await store.claim("omneo", 7, owner, 60):
            taken[owner] += claims

    await asyncio.gather(drain(a, "a"), drain(b, "b"))
    ids = [c.delivery_id for c in taken["a"] + taken["b"]]
    assert len(ids) == len(set(ids)) == 120
    assert taken["a"] and taken["b"]
    # Each replica took every real-time delivery it got before any bulk one.
    for claims in taken.values():
        lanes = [c.lane for c in claims]
        assert lanes == sorted(lanes, key=lambda lane: lane == "bulk"), lanes


async def test_one_persons_writes_keep_their_order_across_lanes_and_replicas(
    replicas: Replicas,
) -> None:
    a, b = replicas
    people = [f"p{i}" for i in range(30)]
    lanes: list[Lane] = ["bulk", "realtime", "bulk", "realtime"]
    for n, lane in enumerate(lanes):
        await (a if n % 2 else b).accept(request(f"w{n}", lane, *people))
    sent: dict[str, list[str]] = {p: [] for p in people}
    in_flight: set[str] = set()
    rng = random.Random(11)

    async def work(store: PostgresStore, owner: str, order: tuple[Lane, ...]) -> None:
        while claims := await store.claim("omneo", 5, owner, 60, lanes=order):
            for c in claims:
                assert c.external_id not in in_flight, f"two writes of {c.external_id} at once"
                in_flight.add(c.external_id)
                sent[c.external_id].append(c.profile.first_name or "")
            await asyncio.sleep(rng.random() / 500)
            in_flight.difference_update(c.external_id for c in claims)
            await store.record(owner, [DeliveryResult(c.delivery_id, "accepted") for c in claims])

    realtime_first: tuple[Lane, ...] = ("realtime", "bulk")
    bulk_first: tuple[Lane, ...] = ("bulk", "realtime")
    await asyncio.gather(
        work(a, "a", realtime_first),
        work(b, "b", bulk_first),
        work(a, "a2", bulk_first),
        work(b, "b2", realtime_first),
    )
    # Queued writes of a person ride in the claim of the earliest (merging):
    # whatever each send carried, the sends go in write order and the last
    # one is the newest write.
    for person, versions in sent.items():
        assert versions == sorted(set(versions)) and versions[-1] == "w3", person
