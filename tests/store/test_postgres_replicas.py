"""Two gateway replicas on one PostgreSQL: each store below has its own pool,
as each process would, and they race on the same rows."""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg
import pytest

from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import AcceptResult, DeliveryResult, IdempotencyConflict, NewRequest
from gateway.store.postgres import PostgresStore
from gateway.store.postgres import accept as postgres_accept
from tests.store import pg

pytestmark = pytest.mark.anyio

Replicas = tuple[PostgresStore, PostgresStore]


def request(
    rid: str,
    *ids: str,
    key: str | None = None,
    body_hash: str | None = None,
    targets: list[Backend] | None = None,
) -> NewRequest:
    return NewRequest(
        request_id=rid,
        app="crm",
        targets=targets or ["omneo"],
        profiles=[NormalizedProfile(external_id=i, first_name=rid) for i in ids],
        received_at=time.time(),
        idempotency_key=key,
        body_hash=body_hash,
    )


async def test_two_replicas_claiming_at_once_never_get_the_same_delivery(
    replicas: Replicas, pg_url: str
) -> None:
    a, b = replicas
    for r in range(3):
        await a.accept(request(f"r{r}", *(f"p{r}-{i}" for i in range(100))))
    assert await a.expand() == 300  # what is under test here is claiming
    taken: dict[str, list[int]] = {"a": [], "b": []}

    async def drain(store: PostgresStore, owner: str) -> None:
        while claims := await store.claim("omneo", 7, owner, 60):
            taken[owner] += [c.delivery_id for c in claims]

    await asyncio.gather(drain(a, "a"), drain(b, "b"))
    assert taken["a"] and taken["b"]  # both took part
    assert not set(taken["a"]) & set(taken["b"])
    assert sorted(taken["a"] + taken["b"]) == list(range(1, 301))
    rows = await pg.execute(pg_url, "SELECT DISTINCT state, attempts FROM deliveries")
    assert [tuple(r) for r in rows] == [("in_flight", 1)]  # one claim counted each


async def test_a_lease_held_by_a_dead_replica_is_claimed_again_once_it_expires(
    replicas: Replicas,
) -> None:
    a, b = replicas
    await a.accept(request("r1", "x"))
    [lost] = await a.claim("omneo", 10, "replica-a", lease_seconds=0.5)
    await a.close()  # dies mid-send: no record
    assert await b.claim("omneo", 10, "replica-b", 60) == []  # the lease still holds
    await asyncio.sleep(0.6)
    [again] = await b.claim("omneo", 10, "replica-b", 60)
    assert (again.delivery_id, again.attempts) == (lost.delivery_id, 2)
    # The dead replica's outcome, were it to arrive now, is not applied.
    assert await b.record("replica-a", [DeliveryResult(lost.delivery_id, "failed", "x")]) == 0
    assert await b.record("replica-b", [DeliveryResult(again.delivery_id, "accepted")]) == 1


async def test_a_later_write_waits_for_the_earlier_one_on_another_replica(
    replicas: Replicas,
) -> None:
    a, b = replicas
    await a.accept(request("r1", "x"))
    first = await a.claim("omneo", 10, "a", 60)
    # Written once r1's is out (queued before, it would ride along, merged).
    await b.accept(request("r2", "x", "y"))
    first += await b.claim("omneo", 10, "a", 60)
    assert [(c.external_id, c.profile.first_name) for c in first] == [("x", "r1"), ("y", "r2")]
    assert await b.claim("omneo", 10, "b", 60) == []  # r2's x waits for r1's, held by a
    retry = DeliveryResult(first[0].delivery_id, "retrying", "503", next_attempt_at=time.time())
    await a.record("a", [retry])
    [again] = await b.claim("omneo", 10, "b", 60)  # the retry goes first, from either
    # ... carrying r2's x, queued behind it meanwhile (merged).
    assert (again.delivery_id, again.attempts) == (first[0].delivery_id, 2)
    assert (again.profile.first_name, len(again.carries)) == ("r2", 1)
    assert await a.claim("omneo", 10, "a", 60) == []
    await b.record("b", [DeliveryResult(again.delivery_id, "accepted")])
    assert await a.claim("omneo", 10, "a", 60) == []


async def test_writes_of_one_person_never_overtake_each_other_across_replicas(
    replicas: Replicas, pg_url: str
) -> None:
    """Writes keep arriving on both replicas while four workers (two a replica)
    claim: queued writes of a person ride along with the claimed one (merged).
    Every write is delivered exactly once, as a claim or carried by one; a
    person's claims follow their writes' order; nothing is both."""
    a, b = replicas
    people = [f"p{i}" for i in range(40)]
    rounds = 5
    sent: dict[str, list[tuple[int, str]]] = {p: [] for p in people}  # (carrier, name)
    carried: dict[int, tuple[int, ...]] = {}
    in_flight: set[str] = set()
    rng = random.Random(7)
    writing = asyncio.Event()

    async def writer() -> None:
        for n in range(rounds):  # writes of each person, from alternating replicas
            await (a if n % 2 else b).accept(request(f"w{n}", *people))
            await asyncio.sleep(rng.random() / 100)
        writing.set()

    async def work(store: PostgresStore, owner: str) -> None:
        while True:
            claims = await store.claim("omneo", 5, owner, 60)
            if not claims:
                if writing.is_set():
                    return
                await asyncio.sleep(0.002)
                continue
            for c in claims:
                assert c.external_id not in in_flight, f"two writes of {c.external_id} at once"
                in_flight.add(c.external_id)
                sent[c.external_id].append((c.delivery_id, c.profile.first_name or ""))
                carried[c.delivery_id] = c.carries
            await asyncio.sleep(rng.random() / 500)
            # Forgotten before the record commits: until then the database still
            # holds the person's next write back, so a claim cannot slip in.
            in_flight.difference_update(c.external_id for c in claims)
            await store.record(owner, [DeliveryResult(c.delivery_id, "accepted") for c in claims])

    await asyncio.gather(writer(), work(a, "a"), work(b, "b"), work(a, "a2"), work(b, "b2"))
    while claims := await a.claim("omneo", 100, "a", 60):  # anything expanded last
        for c in claims:
            sent[c.external_id].append((c.delivery_id, c.profile.first_name or ""))
            carried[c.delivery_id] = c.carries
        await a.record("a", [DeliveryResult(c.delivery_id, "accepted") for c in claims])
    rows = await pg.execute(
        pg_url, "SELECT id, external_id, state, merged_into FROM deliveries ORDER BY id"
    )
    assert len(rows) == rounds * len(people)
    by_person: dict[str, list[int]] = {p: [] for p in people}
    for r in rows:
        by_person[r["external_id"]].append(r["id"])
    claimed = {d for person in sent.values() for d, _ in person}
    merged = [d for ds in carried.values() for d in ds]
    assert not claimed & set(merged)  # nothing both claimed and merged
    assert len(merged) == len(set(merged))  # each carried once
    assert sorted(claimed | set(merged)) == [r["id"] for r in rows]  # every write, once
    assert any(merged)  # the writes did queue up behind each other
    for person in people:
        carriers = [d for d, _ in sent[person]]
        assert carriers == sorted(carriers)
        # Each claim carries the writes that came after it and before the next.
        flat = [x for d in carriers for x in (d, *carried[d])]
        assert flat == by_person[person]
        names = [name for _, name in sent[person]]
        assert names == sorted(names) and names[-1] == f"w{rounds - 1}"
    states = {(r["state"], r["merged_into"] is None) for r in rows}
    assert states <= {("accepted", True), ("merged", False)}
    for r in rows:
        if r["state"] == "merged":
            assert carried[r["merged_into"]].count(r["id"]) == 1


async def test_a_request_not_yet_committed_is_expanded_once_it_is(
    replicas: Replicas, pg_url: str
) -> None:
    """Requests that overlap in time have no order a caller could rely on: each
    person's deliveries follow the order in which expand saw their requests
    committed, and a request is never lost for having committed late."""
    a, b = replicas
    # Replica "c" is part way through accepting r1: stored, not yet committed.
    conn = await asyncpg.connect(pg_url)
    try:
        c_commit = conn.transaction()
        await c_commit.start()
        await postgres_accept.accept(conn, request("r1", "x"))
        await asyncio.wait_for(a.accept(request("r2", "x")), 5)  # nothing to wait for
        [first] = await b.claim("omneo", 10, "b", 60)
        assert first.profile.first_name == "r2"
        await c_commit.commit()
    finally:
        await conn.close()
    # r1 is expanded now, and waits while r2, expanded before it, is open.
    assert await b.claim("omneo", 10, "b", 60) == []
    await b.record("b", [DeliveryResult(first.delivery_id, "accepted")])
    [second] = await a.claim("omneo", 10, "a", 60)
    assert second.profile.first_name == "r1" and second.delivery_id > first.delivery_id


async def test_replicas_expanding_at_once_make_each_delivery_once_in_order(
    replicas: Replicas, pg_url: str
) -> None:
    a, b = replicas
    people = [f"p{i}" for i in range(30)]
    for n in range(6):  # one request after another: their order is the callers'
        await (a if n % 2 else b).accept(request(f"w{n}", *people))
    made = await asyncio.gather(*(s.expand() for s in (a, b, a, b, a, b, a, b)))
    assert sum(made) == 180  # the lock let one expand at a time; none twice
    rows = await pg.execute(
        pg_url,
        "SELECT d.external_id, r.id FROM deliveries d JOIN profile_writes w ON w.id = d.write_id"
        " JOIN requests r ON r.id = w.request_id ORDER BY d.id",
    )
    by_person: dict[str, list[str]] = {}
    for person, req in rows:
        by_person.setdefault(person, []).append(req)
    assert by_person == {p: [f"w{n}" for n in range(6)] for p in people}


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_a_key_being_stored_elsewhere_is_waited_for(
    replicas: Replicas, pg_url: str, outcome: str
) -> None:
    a, _ = replicas
    conn = await asyncpg.connect(pg_url)
    try:
        twin = conn.transaction()
        await twin.start()
        await postgres_accept.accept(conn, request("r1", "x", key="k", body_hash="h"))
        retry = asyncio.create_task(a.accept(request("r2", "x", key="k", body_hash="h")))
        await asyncio.sleep(0.3)
        assert not retry.done()  # waits on the key, rather than storing a second copy
        await (twin.commit() if outcome == "commit" else twin.rollback())
    finally:
        await conn.close()
    if outcome == "commit":
        assert await retry == AcceptResult("r1", 1, ["omneo"], replayed=True)
        assert await a.get_request("r2") is None
    else:  # the first never happened: the retry is the one stored
        assert await retry == AcceptResult("r2", 1, ["omneo"])
        assert await a.get_request("r1") is None


async def test_two_replicas_accepting_one_key_at_once_store_it_once(
    replicas: Replicas, pg_url: str
) -> None:
    a, b = replicas
    for n in range(20):
        same = await asyncio.gather(
            a.accept(request(f"a{n}", f"p{n}", key=f"same{n}", body_hash="h")),
            b.accept(request(f"b{n}", f"p{n}", key=f"same{n}", body_hash="h")),
        )
        assert sorted(r.replayed for r in same) == [False, True]
        assert same[0].request_id == same[1].request_id
        other = await asyncio.gather(
            a.accept(request(f"c{n}", f"q{n}", key=f"other{n}", body_hash="x")),
            b.accept(request(f"d{n}", f"q{n}", key=f"other{n}", body_hash="y")),
            return_exceptions=True,
        )
        [stored] = [r for r in other if isinstance(r, AcceptResult)]
        [refused] = [r for r in other if isinstance(r, IdempotencyConflict)]
        assert refused.request_id == stored.request_id
    counts = await pg.execute(
        pg_url,
        "SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM expand_queue),"
        " (SELECT count(*) FROM idempotency_keys)",
    )
    assert tuple(counts[0]) == (40, 40, 40)
