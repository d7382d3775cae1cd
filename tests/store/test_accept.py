"""Accepting writes, idempotency and the status views, on every engine."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import AcceptResult, IdempotencyConflict, NewRequest, Store

pytestmark = pytest.mark.anyio


def request(
    rid: str,
    *ids: str,
    key: str | None = None,
    body_hash: str | None = None,
    app: str = "crm",
    targets: list[Backend] | None = None,
) -> NewRequest:
    return NewRequest(
        request_id=rid,
        app=app,
        targets=targets or ["omneo"],
        profiles=[NormalizedProfile(external_id=i, first_name=rid) for i in ids],
        received_at=time.time(),
        idempotency_key=key,
        body_hash=body_hash,
    )


async def test_a_key_reused_with_the_same_body_answers_again_and_stores_nothing(
    store: Store,
) -> None:
    first = await store.accept(request("r1", "a", "b", key="k", body_hash="h", targets=["ocamba"]))
    again = await store.accept(request("r2", "c", key="k", body_hash="h"))
    assert first == AcceptResult("r1", 2, ["ocamba"])
    assert again == AcceptResult("r1", 2, ["ocamba"], replayed=True)
    assert await store.get_request("r2") is None
    assert await store.get_profile("c") is None


async def test_a_key_reused_with_another_body_is_a_conflict(store: Store) -> None:
    await store.accept(request("r1", "a", key="k", body_hash="h"))
    with pytest.raises(IdempotencyConflict) as refused:
        await store.accept(request("r2", "b", key="k", body_hash="other"))
    assert refused.value.request_id == "r1"
    assert await store.get_request("r2") is None


async def test_keys_are_scoped_per_app(store: Store) -> None:
    await store.accept(request("r1", "a", key="k", body_hash="h", app="crm"))
    other = await store.accept(request("r2", "a", key="k", body_hash="x", app="shop"))
    assert other == AcceptResult("r2", 1, ["omneo"])


async def test_a_conflict_does_not_undo_requests_stored_beside_it(store: Store) -> None:
    await store.accept(request("r0", "a", key="k", body_hash="h1"))
    results = await asyncio.gather(
        store.accept(request("r1", "b")),
        store.accept(request("r2", "c", key="k", body_hash="other")),
        store.accept(request("r3", "d")),
        return_exceptions=True,
    )
    assert isinstance(results[1], IdempotencyConflict)
    assert [r.request_id for r in (results[0], results[2])] == ["r1", "r3"]  # type: ignore[union-attr]
    assert await store.get_request("r2") is None
    assert await store.get_request("r3") is not None


async def test_the_same_key_twice_at_once_stores_once(store: Store) -> None:
    same = await asyncio.gather(
        store.accept(request("r1", "a", key="k", body_hash="h")),
        store.accept(request("r2", "a", key="k", body_hash="h")),
        return_exceptions=True,
    )
    assert all(isinstance(r, AcceptResult) for r in same), same
    stored = [r for r in same if isinstance(r, AcceptResult) and not r.replayed]
    replayed = [r for r in same if isinstance(r, AcceptResult) and r.replayed]
    assert len(stored) == 1 and len(replayed) == 1
    assert replayed[0].request_id == stored[0].request_id
    loser = "r2" if stored[0].request_id == "r1" else "r1"
    assert await store.get_request(loser) is None
    view = await store.get_profile("a")
    assert view is not None and view.last_request_id == stored[0].request_id


async def test_the_same_key_with_two_bodies_at_once_stores_one_and_refuses_the_other(
    store: Store,
) -> None:
    outcomes = await asyncio.gather(
        store.accept(request("r1", "a", key="k", body_hash="x")),
        store.accept(request("r2", "a", key="k", body_hash="y")),
        return_exceptions=True,
    )
    [stored] = [r for r in outcomes if isinstance(r, AcceptResult)]
    [conflict] = [r for r in outcomes if isinstance(r, IdempotencyConflict)]
    assert not stored.replayed and conflict.request_id == stored.request_id


async def test_the_request_view_lists_every_profile_and_delivery_in_order(store: Store) -> None:
    await store.accept(request("r1", "b", "a", targets=["omneo", "import_batch"]))
    view = await store.get_request("r1")
    assert view is not None
    assert (view.app, view.targets) == ("crm", ["omneo", "import_batch"])
    assert [(p.external_id, p.position) for p in view.profiles] == [("b", 0), ("a", 1)]
    assert [[(d.backend, d.state, d.attempts) for d in p.deliveries] for p in view.profiles] == [
        [("omneo", "pending", 0), ("import_batch", "pending", 0)]
    ] * 2
    assert await store.get_request("nope") is None


async def test_the_profile_view_shows_the_latest_write_and_latest_delivery_per_backend(
    store: Store,
) -> None:
    await store.accept(request("r1", "a", targets=["omneo", "ocamba"]))
    await store.accept(request("r2", "a", targets=["omneo"]))
    view = await store.get_profile("a")
    assert view is not None and view.profile is not None
    assert (view.last_request_id, view.profile.first_name) == ("r2", "r2")
    assert sorted(view.backends) == ["ocamba", "omneo"]
    assert view.backend_ids == {}
    assert await store.get_profile("nobody") is None


async def test_ping_answers(store: Store) -> None:
    await store.ping()
