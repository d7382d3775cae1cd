"""Expand: the deliveries of accepted requests, made off the request path."""

from __future__ import annotations

import sqlite3
import time

import pytest

from gateway.schema import NormalizedProfile
from gateway.store.base import NewRequest, Store
from gateway.store.expand import PROFILES_PER_STEP
from tests.store import pg

pytestmark = pytest.mark.anyio


async def write(store: Store, rid: str, size: int) -> None:
    profiles = [NormalizedProfile(external_id=f"{rid}-{i}") for i in range(size)]
    await store.accept(NewRequest(rid, "crm", ["omneo", "ocamba"], profiles, time.time()))


async def test_each_step_is_bounded_and_takes_whole_requests(store: Store) -> None:
    third = PROFILES_PER_STEP // 3 + 1  # two fit in a step, three do not
    for n in range(3):
        await write(store, f"r{n}", third)
    assert await store.expand() == 2 * third * 2  # two requests, two targets each
    assert await store.expand() == third * 2
    assert await store.expand() == 0


async def test_a_request_larger_than_a_step_is_expanded_whole(store: Store) -> None:
    await write(store, "big", PROFILES_PER_STEP + 5)
    assert await store.expand() == (PROFILES_PER_STEP + 5) * 2


async def test_a_claim_expands_before_it_claims(store: Store) -> None:
    await write(store, "r", 3)
    claims = await store.claim("ocamba", 10, "w", 60)
    assert [c.external_id for c in claims] == ["r-0", "r-1", "r-2"]
    # The other backend's deliveries were made by that claim too.
    assert await store.expand() == 0
    assert len(await store.claim("omneo", 10, "w", 60)) == 3


async def test_a_write_erased_before_expand_is_never_claimed(store: Store) -> None:
    await write(store, "r", 2)
    erased = await store.erase_profile("r-0")
    assert erased is not None and erased.deliveries_cancelled == 2
    view = await store.get_profile("r-0")
    assert view is not None and {d.state for d in view.backends.values()} == {"erased"}
    claims = await store.claim("omneo", 10, "w", 60)
    assert [c.external_id for c in claims] == ["r-1"]
    view = await store.get_profile("r-0")
    assert view is not None and {d.state for d in view.backends.values()} == {"erased"}


async def test_each_delivery_waits_in_its_requests_lane(store: Store, store_url: str) -> None:
    profiles = [NormalizedProfile(external_id="a")]
    await store.accept(NewRequest("rt", "crm", ["omneo"], profiles, time.time()))
    await store.accept(NewRequest("bk", "crm", ["omneo"], profiles, time.time(), lane="bulk"))
    assert await store.expand() == 2
    query = "SELECT lane FROM deliveries ORDER BY id"
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            lanes = [lane for (lane,) in conn.execute(query)]
    else:
        lanes = [r["lane"] for r in await pg.execute(store_url, query)]
    assert lanes == ["realtime", "bulk"]
