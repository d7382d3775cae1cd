"""Merging a person's queued writes into the claimed one, on both engines."""

from __future__ import annotations

import time

import pytest

from gateway.clock import FakeClock
from gateway.schema import NormalizedProfile
from gateway.store.base import DeliveryResult, NewRequest, Store
from gateway.store.merge import merged


def version(external_id: str, i: int) -> NormalizedProfile:
    """The i-th write of a person: a name that changes, and one attribute each."""
    return NormalizedProfile(
        external_id,
        first_name=f"v{i}",
        email=f"{external_id}@x.test" if i == 0 else None,
        attributes={f"k{i}": i, "last": i},
    )


async def write(
    store: Store,
    rid: str,
    *profiles: NormalizedProfile,
    received_at: float | None = None,
    resend: bool = False,
) -> str:
    await store.accept(
        NewRequest(
            request_id=rid,
            app="crm",
            targets=["omneo"],
            profiles=list(profiles),
            received_at=time.time() if received_at is None else received_at,
            resend=resend,
        )
    )
    return rid


async def ten_writes(store: Store, external_id: str = "p") -> list[NormalizedProfile]:
    writes = [version(external_id, i) for i in range(10)]
    for i, profile in enumerate(writes):
        await write(store, f"r-{external_id}-{i}", profile)
    return writes


@pytest.mark.anyio
async def test_ten_queued_writes_go_as_one_claim_carrying_nine(store: Store) -> None:
    writes = await ten_writes(store)
    [claim] = await store.claim("omneo", 10, "w", 60)
    assert len(claim.carries) == 9 and claim.merged_now == 9
    assert list(claim.carries) == sorted(claim.carries)
    assert claim.delivery_id < claim.carries[0]
    assert claim.profile == merged(writes[0], writes[1:])
    assert claim.profile.first_name == "v9" and claim.profile.email == "p@x.test"
    assert claim.attempts == 1
    # Nothing else of the person is due: the nine are merged, not pending.
    assert await store.claim("omneo", 10, "w", 60) == []
    assert await store.count_state("omneo", "merged") == 9
    assert await store.record("w", [DeliveryResult(claim.delivery_id, "accepted")]) == 1
    assert await store.claim("omneo", 10, "w", 60) == []


@pytest.mark.anyio
async def test_order_between_persons_is_unchanged(store: Store) -> None:
    await write(store, "r1", version("a", 0), version("b", 0), version("c", 0))
    await write(store, "r2", version("b", 1), version("a", 1))
    claims = await store.claim("omneo", 10, "w", 60)
    assert [c.external_id for c in claims] == ["a", "b", "c"]
    assert [c.profile.first_name for c in claims] == ["v1", "v1", "v0"]
    assert [len(c.carries) for c in claims] == [1, 1, 0]


@pytest.mark.anyio
async def test_a_write_queued_after_the_claim_waits_for_the_carrier(store: Store) -> None:
    await write(store, "r1", version("p", 0))
    await write(store, "r2", version("p", 1))
    [carrier] = await store.claim("omneo", 10, "w", 60)
    await write(store, "r3", version("p", 2))
    assert await store.claim("omneo", 10, "w", 60) == []  # held back while it is out
    await store.record("w", [DeliveryResult(carrier.delivery_id, "accepted")])
    [later] = await store.claim("omneo", 10, "w", 60)
    assert later.profile == version("p", 2) and later.carries == ()


@pytest.mark.anyio
async def test_a_crashed_carrier_is_claimed_again_with_the_same_payload(store: Store) -> None:
    await ten_writes(store)
    [crashed] = await store.claim("omneo", 10, "gone", lease_seconds=0.0)
    [again] = await store.claim("omneo", 10, "w", 60)
    assert again.delivery_id == crashed.delivery_id
    assert again.profile == crashed.profile and again.carries == crashed.carries
    assert (again.attempts, again.merged_now) == (2, 0)  # the carrier's attempt, once


@pytest.mark.anyio
async def test_a_retried_carrier_takes_in_writes_queued_meanwhile(store: Store) -> None:
    await write(store, "r0", version("p", 0))
    await write(store, "r1", version("p", 1))
    [first] = await store.claim("omneo", 10, "w", 60)
    await store.record(
        "w", [DeliveryResult(first.delivery_id, "retrying", "503", next_attempt_at=0.0)]
    )
    await write(store, "r2", version("p", 2))
    [again] = await store.claim("omneo", 10, "w", 60)
    assert again.delivery_id == first.delivery_id
    assert len(again.carries) == 2 and again.merged_now == 1
    assert again.profile == merged(version("p", 0), [version("p", 1), version("p", 2)])


@pytest.mark.anyio
async def test_a_dead_carrier_replayed_sends_the_merged_payload_again(store: Store) -> None:
    writes = await ten_writes(store)
    [carrier] = await store.claim("omneo", 10, "w", 60)
    await store.record("w", [DeliveryResult(carrier.delivery_id, "dead", "gave up")])
    assert (await store.replay(["dead"])).requeued == [carrier.delivery_id]
    [replayed] = await store.claim("omneo", 10, "w", 60)
    assert replayed.delivery_id == carrier.delivery_id
    assert replayed.profile == merged(writes[0], writes[1:])
    assert replayed.carries == carrier.carries


@pytest.mark.anyio
async def test_the_status_views_show_merged_into_and_the_carriers_state(store: Store) -> None:
    await write(store, "r0", version("p", 0))
    await write(store, "r1", version("p", 1))
    [carrier] = await store.claim("omneo", 10, "w", 60)
    await store.record("w", [DeliveryResult(carrier.delivery_id, "failed", "refused")])
    first = await store.get_request("r0")
    second = await store.get_request("r1")
    assert first is not None and second is not None
    [own] = first.profiles[0].deliveries
    assert (own.state, own.merged_into, own.carrier_state) == ("failed", None, None)
    [view] = second.profiles[0].deliveries
    assert (view.state, view.merged_into, view.carrier_state) == (
        "merged",
        carrier.delivery_id,
        "failed",
    )
    profile = await store.get_profile("p")
    assert profile is not None
    latest = profile.backends["omneo"]
    assert (latest.state, latest.merged_into, latest.carrier_state) == (
        "merged",
        carrier.delivery_id,
        "failed",
    )


@pytest.mark.anyio
async def test_purge_keeps_a_merged_write_while_its_carrier_is_open(store: Store) -> None:
    await write(store, "r0", version("p", 0))
    await write(store, "r1", version("p", 1))
    [carrier] = await store.claim("omneo", 10, "w", 60)
    # The merged write is settled (merged) but its carrier is out: kept.
    assert (await store.purge(time.time() + 3600)).writes == 0
    await store.record("w", [DeliveryResult(carrier.delivery_id, "accepted")])
    assert (await store.purge(time.time() + 3600)).writes == 2


@pytest.mark.anyio
async def test_erasure_leaves_merged_deliveries_pointing_at_the_erased_carrier(
    store: Store,
) -> None:
    await write(store, "r0", version("p", 0))
    await write(store, "r1", version("p", 1))
    [carrier] = await store.claim("omneo", 10, "w", 60)
    erasure = await store.erase_profile("p")
    assert erasure is not None and erasure.deliveries_in_flight == 1
    request = await store.get_request("r1")
    assert request is not None
    [view] = request.profiles[0].deliveries
    assert (view.state, view.merged_into, view.carrier_state) == (
        "merged",
        carrier.delivery_id,
        "erased",
    )
    assert await store.claim("omneo", 10, "w", 0.0) == []


@pytest.mark.anyio
async def test_a_write_merged_into_a_delivered_carrier_supersedes_an_older_dead_one(
    store: Store,
) -> None:
    # w0 dies; w1 is sent and dies; w0 is replayed and, claimed, carries w2:
    # w2's fields reached the backend, so w1 must not be sent again over them.
    await write(store, "r0", version("p", 0))
    [w0] = await store.claim("omneo", 10, "w", 60)
    await store.record("w", [DeliveryResult(w0.delivery_id, "dead", "gave up")])
    await write(store, "r1", version("p", 1))
    [w1] = await store.claim("omneo", 10, "w", 60)
    await store.record("w", [DeliveryResult(w1.delivery_id, "dead", "gave up")])
    assert (await store.replay(["dead"], delivery_id=w0.delivery_id)).requeued == [w0.delivery_id]
    await write(store, "r2", version("p", 2))
    [carrier] = await store.claim("omneo", 10, "w", 60)
    assert carrier.delivery_id == w0.delivery_id and len(carrier.carries) == 1
    await store.record("w", [DeliveryResult(carrier.delivery_id, "accepted")])
    replayed = await store.replay(["dead"], delivery_id=w1.delivery_id)
    assert (replayed.requeued, replayed.superseded) == ([], [w1.delivery_id])


@pytest.mark.anyio
async def test_a_settle_holds_a_write_back_until_the_persons_next_ones_ride_along(
    store: Store,
) -> None:
    clock = FakeClock(1_000.0)
    store.clock = clock

    async def at(rid: str, profile: NormalizedProfile) -> None:
        await write(store, rid, profile, received_at=clock.now())

    await at("r0", version("p", 0))
    assert await store.claim("omneo", 10, "w", 60, settle=2.0) == []
    clock.advance(1.5)
    await at("r1", version("p", 1))
    assert await store.claim("omneo", 10, "w", 60, settle=2.0) == []
    clock.advance(0.5)  # the first write is 2 s old: due, and the second rides along
    [claim] = await store.claim("omneo", 10, "w", 60, settle=2.0)
    assert claim.profile.first_name == "v1" and claim.merged_now == 1
    # A retry has waited its backoff: due at its time, with no settle on top.
    retry = DeliveryResult(claim.delivery_id, "retrying", "503", next_attempt_at=clock.now() + 1)
    await store.record("w", [retry])
    clock.advance(1.0)
    [again] = await store.claim("omneo", 10, "w", 60, settle=2.0)
    assert again.delivery_id == claim.delivery_id and again.attempts == 2
    # Without a settle the same write is due at once.
    await at("r2", version("q", 0))
    [other] = await store.claim("omneo", 10, "w", 60)
    assert other.external_id == "q"


@pytest.mark.anyio
async def test_a_write_asking_for_resend_is_neither_merged_nor_merged_past(store: Store) -> None:
    await write(store, "r0", version("p", 0))
    await write(store, "r1", version("p", 1))
    await write(store, "r2", version("p", 2), resend=True)
    await write(store, "r3", version("p", 3))
    await write(store, "r4", version("p", 4), resend=True)

    sent = []
    while claims := await store.claim("omneo", 10, "w", 60):
        [claim] = claims
        sent.append((claim.profile.first_name, len(claim.carries), claim.resend))
        await store.record("w", [DeliveryResult(claim.delivery_id, "accepted")])
    # v1 rides with v0; the two that asked for a re-send go as they are, each
    # by itself, in order (v3 waits behind v2, then goes alone: v4 is a resend).
    assert sent == [("v1", 1, False), ("v2", 0, True), ("v3", 0, False), ("v4", 0, True)]
