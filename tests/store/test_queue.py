"""The delivery queue: leases, per-person ordering, outcomes, dead letters."""

from __future__ import annotations

import time

import pytest

from gateway.schema import Backend, Lane, NormalizedProfile
from gateway.store.base import DeliveryResult, NewRequest, Store


async def write(store: Store, rid: str, *ids: str, targets: list[Backend] | None = None) -> None:
    await store.accept(
        NewRequest(
            request_id=rid,
            app="crm",
            targets=targets or ["omneo"],
            profiles=[NormalizedProfile(external_id=i, first_name=rid) for i in ids],
            received_at=time.time(),
        )
    )


@pytest.mark.anyio
async def test_claim_leases_in_order_and_never_twice(store: Store) -> None:
    await write(store, "r1", "a", "b", "c")
    first = await store.claim("omneo", 2, "w1", 60)
    second = await store.claim("omneo", 10, "w2", 60)
    assert [c.external_id for c in first] == ["a", "b"]
    assert [c.external_id for c in second] == ["c"]
    assert await store.claim("omneo", 10, "w3", 60) == []
    assert first[0].attempts == 1
    assert first[0].profile.first_name == "r1"


@pytest.mark.anyio
async def test_a_later_write_waits_for_the_earlier_one_of_the_same_person(
    store: Store,
) -> None:
    await write(store, "r1", "a")
    claims = await store.claim("omneo", 10, "w", 60)
    # Written once r1's is out (queued before, it would ride along: test_merge.py).
    await write(store, "r2", "a", "b")
    claims += await store.claim("omneo", 10, "w", 60)
    assert [(c.external_id, c.profile.first_name) for c in claims] == [("a", "r1"), ("b", "r2")]
    # r2's write of "a" is held while r1's is in flight ...
    assert await store.claim("omneo", 10, "w", 60) == []
    # ... and while it is retrying, even when its own time has come.
    await store.record(
        "w",
        [
            DeliveryResult(
                claims[0].delivery_id, "retrying", "500", next_attempt_at=time.time() + 60
            )
        ],
    )
    assert await store.claim("omneo", 10, "w", 60) == []
    await store.replay(["retrying"])
    # Claimed again, r1's takes r2's queued write along (merged, test_merge.py).
    [again] = await store.claim("omneo", 10, "w", 60)
    assert (again.delivery_id, again.attempts) == (claims[0].delivery_id, 1)
    assert (again.profile.first_name, len(again.carries)) == ("r2", 1)
    await store.record("w", [DeliveryResult(again.delivery_id, "accepted")])
    assert await store.claim("omneo", 10, "w", 60) == []


@pytest.mark.anyio
async def test_backends_are_independent(store: Store) -> None:
    await write(store, "r1", "a", targets=["omneo", "ocamba"])
    assert len(await store.claim("omneo", 10, "w", 60)) == 1
    assert len(await store.claim("ocamba", 10, "w", 60)) == 1


@pytest.mark.anyio
async def test_an_expired_lease_is_claimed_again_and_the_old_owner_cannot_record(
    store: Store,
) -> None:
    await write(store, "r1", "a")
    [crashed] = await store.claim("omneo", 10, "dead-worker", lease_seconds=0.0)
    [retaken] = await store.claim("omneo", 10, "new-worker", 60)
    assert retaken.delivery_id == crashed.delivery_id
    assert retaken.attempts == 2
    stale = await store.record("dead-worker", [DeliveryResult(crashed.delivery_id, "failed", "x")])
    assert stale == 0
    assert (
        await store.record(
            "new-worker", [DeliveryResult(retaken.delivery_id, "confirmed", backend_id="B-1")]
        )
        == 1
    )
    view = await store.get_profile("a")
    assert view is not None
    assert view.backends["omneo"].state == "confirmed"
    assert view.backend_ids == {"omneo": "B-1"}


@pytest.mark.anyio
async def test_dead_letters_list_and_replay(store: Store) -> None:
    await write(store, "r1", "a", "b", targets=["omneo", "import_batch"])
    for backend in ("omneo", "import_batch"):
        claims = await store.claim(backend, 10, "w", 60)
        await store.record("w", [DeliveryResult(c.delivery_id, "dead", "gave up") for c in claims])
    dead = await store.list_deliveries(["dead"], backend="omneo")
    assert [(d.external_id, d.backend, d.last_error, d.request_id) for d in dead] == [
        ("a", "omneo", "gave up", "r1"),
        ("b", "omneo", "gave up", "r1"),
    ]
    one = await store.replay(["dead"], delivery_id=dead[0].delivery_id)
    assert one.requeued == [dead[0].delivery_id]
    rest = await store.replay(["dead"], backend="omneo")
    assert rest.requeued == [dead[1].delivery_id]
    assert len(await store.list_deliveries(["dead"])) == 2  # import_batch untouched
    assert [c.attempts for c in await store.claim("omneo", 10, "w", 60)] == [1, 1]


@pytest.mark.anyio
async def test_replay_skips_a_dead_write_superseded_by_a_newer_delivered_one(
    store: Store,
) -> None:
    await write(store, "old", "a")
    [old] = await store.claim("omneo", 10, "w", 60)
    await store.record("w", [DeliveryResult(old.delivery_id, "dead", "gave up")])
    await write(store, "new", "a")
    [new] = await store.claim("omneo", 10, "w", 60)
    await store.record("w", [DeliveryResult(new.delivery_id, "accepted")])
    result = await store.replay(["dead"])
    assert result.requeued == []
    assert result.superseded == [old.delivery_id]


@pytest.mark.anyio
async def test_queue_stats(store: Store) -> None:
    await write(store, "r1", "a", "b", targets=["omneo", "ocamba"])
    await store.claim("ocamba", 1, "w", 60)
    stats = {s.backend: s for s in await store.queue_stats()}
    assert stats["omneo"].depth == 2
    assert stats["ocamba"].depth == 2  # in flight still counts as not yet delivered
    assert stats["omneo"].oldest_age >= 0


@pytest.mark.anyio
async def test_queue_stats_count_deliveries_not_made_yet(store: Store) -> None:
    """Requests waiting for expand are work to do: queue depth and age (the
    metrics and alerts read them) count them before their deliveries exist."""
    await write(store, "r1", "a", "b", targets=["omneo", "ocamba"])
    await write(store, "r2", "c", targets=["omneo"])
    stats = {s.backend: (s.depth, s.oldest_age >= 0) for s in await store.queue_stats()}
    assert stats == {"ocamba": (2, True), "omneo": (3, True)}
    assert await store.expand() == 5
    after = {s.backend: s.depth for s in await store.queue_stats()}
    assert after == {"ocamba": 2, "omneo": 3}  # the same work, now as deliveries
    await store.claim("omneo", 3, "w", 60)
    assert {s.backend: s.depth for s in await store.queue_stats()} == after


@pytest.mark.anyio
async def test_expand_keeps_each_persons_order_across_requests(store: Store) -> None:
    for n in range(3):
        await write(store, f"r{n}", "a", f"only{n}", "b")
    sent = []
    while claims := await store.claim("omneo", 10, "w", 60):
        sent += [(c.external_id, c.profile.first_name, len(c.carries)) for c in claims]
        await store.record("w", [DeliveryResult(c.delivery_id, "accepted") for c in claims])
    # Each person's three writes go as one merged payload (test_merge.py), laid
    # over each other in delivery-id order: r2 wins only if expand kept the order.
    assert [(r, n) for p, r, n in sent if p == "a"] == [("r2", 2)]
    assert [(r, n) for p, r, n in sent if p == "b"] == [("r2", 2)]
    assert sorted(p for p, _, _ in sent if p.startswith("only")) == ["only0", "only1", "only2"]


@pytest.mark.anyio
async def test_a_claim_says_whether_its_request_asked_to_resend(store: Store) -> None:
    profiles = [NormalizedProfile(external_id="a")]
    await store.accept(NewRequest("plain", "crm", ["omneo"], profiles, time.time()))
    await store.accept(NewRequest("again", "crm", ["ocamba"], profiles, time.time(), resend=True))
    [plain] = await store.claim("omneo", 10, "w1", 30)
    [again] = await store.claim("ocamba", 10, "w1", 30)
    assert (plain.resend, again.resend) == (False, True)


@pytest.mark.anyio
async def test_only_delivered_outcomes_still_leased_remember_their_digests(store: Store) -> None:
    await write(store, "r1", "a", "b", "c", targets=["omneo"])
    claims = {c.external_id: c for c in await store.claim("omneo", 10, "w1", 30)}
    assert await store.sent_fields("omneo", ["a", "b", "c"]) == {}
    await store.record(
        "w1",
        [
            DeliveryResult(claims["a"].delivery_id, "accepted", digests={"x": "1", "y": "1"}),
            DeliveryResult(claims["b"].delivery_id, "failed", "no", digests={"x": "1"}),
        ],
    )
    # Another worker's lease: not recorded, so not remembered either.
    await store.record(
        "w2", [DeliveryResult(claims["c"].delivery_id, "confirmed", digests={"x": "1"})]
    )
    assert await store.sent_fields("omneo", ["a", "b", "c"]) == {"a": {"x": "1", "y": "1"}}
    # A later delivered write merges over what was there.
    await write(store, "r2", "a", targets=["omneo"])
    [later] = await store.claim("omneo", 10, "w1", 30)
    await store.record("w1", [DeliveryResult(later.delivery_id, "confirmed", digests={"y": "2"})])
    assert await store.sent_fields("omneo", ["a"]) == {"a": {"x": "1", "y": "2"}}
    assert await store.sent_fields("ocamba", ["a"]) == {}


@pytest.mark.anyio
async def test_a_replayed_delivery_forgets_what_the_backend_was_said_to_have(
    store: Store,
) -> None:
    await write(store, "r1", "a", "b", targets=["omneo"])
    claims = {c.external_id: c for c in await store.claim("omneo", 10, "w1", 30)}
    await store.record(
        "w1",
        [
            DeliveryResult(claims["a"].delivery_id, "accepted", digests={"x": "1"}),
            DeliveryResult(claims["b"].delivery_id, "accepted", digests={"x": "1"}),
        ],
    )
    await store.mark_unconfirmed("omneo", time.time() + 3600)
    result = await store.replay(["unconfirmed"], delivery_id=claims["a"].delivery_id)
    assert result.requeued == [claims["a"].delivery_id]
    assert await store.sent_fields("omneo", ["a", "b"]) == {"b": {"x": "1"}}


@pytest.mark.anyio
async def test_an_erasure_forgets_what_the_backends_were_said_to_have(store: Store) -> None:
    await write(store, "r1", "a", "b", targets=["omneo"])
    claims = await store.claim("omneo", 10, "w1", 30)
    await store.record(
        "w1", [DeliveryResult(c.delivery_id, "accepted", digests={"x": "1"}) for c in claims]
    )
    assert set(await store.sent_fields("omneo", ["a", "b"])) == {"a", "b"}
    assert await store.erase_profile("a") is not None
    # Only the erased person's: the other's stay, so its next write is compared.
    assert await store.sent_fields("omneo", ["a", "b"]) == {"b": {"x": "1"}}


@pytest.mark.anyio
async def test_queue_stats_split_the_depth_by_lane(store: Store) -> None:
    writes: list[tuple[str, Lane, tuple[str, ...]]] = [
        ("r1", "realtime", ("a",)),
        ("r2", "bulk", ("b", "c", "d")),
    ]
    for rid, lane, ids in writes:
        await store.accept(
            NewRequest(
                request_id=rid,
                app="t",
                targets=["omneo"],
                profiles=[NormalizedProfile(external_id=i) for i in ids],
                received_at=time.time(),
                lane=lane,
            )
        )
    # Counted before expand made the deliveries, and after, alike.
    [before] = await store.queue_stats()
    assert (before.depth, before.lanes) == (4, {"realtime": 1, "bulk": 3})
    await store.expand()
    [after] = await store.queue_stats()
    assert (after.depth, after.lanes) == (4, {"realtime": 1, "bulk": 3})
    [claim] = await store.claim("omneo", 1, "w", 60, lanes=("realtime",))
    await store.record("w", [DeliveryResult(claim.delivery_id, "accepted")])
    [done] = await store.queue_stats()
    assert (done.depth, done.lanes) == (3, {"bulk": 3})
