"""What the operator page's status is made of: the store's newest-first lists (both
engines), the error ratio's window, a pacer's headroom, the circuit per backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.backends.transport.pacing import FixedWindowPacer
from gateway.dispatch.breaker import CircuitBreaker
from gateway.metrics import Metrics
from gateway.schema import NormalizedProfile
from gateway.store.base import NewRequest, Store
from gateway.ui import status
from gateway.ui.rates import ErrorRatio
from tests.ui.seed import seed


@pytest.mark.anyio
async def test_recent_deliveries_come_newest_first_and_page_on(store: Store) -> None:
    dead = [await seed(store, f"p-{i}", "omneo", "dead", "gave up") for i in range(5)]
    other = await seed(store, "o-1", "ocamba", "dead", "gave up")
    await seed(store, "f-1", "omneo", "failed", "refused")

    first = await store.recent_deliveries("dead", "omneo", limit=2)
    assert [d.delivery_id for d in first] == dead[::-1][:2]
    rest = await store.recent_deliveries("dead", "omneo", 10, first[-1].delivery_id)
    assert [d.delivery_id for d in rest] == dead[::-1][2:]
    every = await store.recent_deliveries("dead")
    assert [d.delivery_id for d in every] == [other, *dead[::-1]]
    assert {d.state for d in every} == {"dead"}
    assert first[0].external_id == "p-4" and first[0].last_error == "gave up"


@pytest.mark.anyio
async def test_recent_deliveries_find_retrying_and_unconfirmed(store: Store) -> None:
    retrying = await seed(store, "r-1", "import_batch", "retrying", "HTTP 503")
    unconfirmed = await seed(store, "u-1", "omneo", "unconfirmed")
    await seed(store, "ok-1", "import_batch", "confirmed")
    assert [d.delivery_id for d in await store.recent_deliveries("retrying")] == [retrying]
    assert [d.delivery_id for d in await store.recent_deliveries("unconfirmed")] == [unconfirmed]
    assert await store.recent_deliveries("dead") == []


@pytest.mark.anyio
async def test_status_counts_masks_and_says_unknown_without_a_dispatcher(store: Store) -> None:
    await seed(store, "a-1", "omneo", "dead", "omneo batch: HTTP 400: bad email jane@example.com")
    await seed(store, "a-2", "import_batch", "failed", "phone +61 412 345 678 refused")
    await seed(store, "a-3", "import_batch", "retrying", "HTTP 503")
    await seed(store, "a-4", "omneo", "unconfirmed")
    await seed(store, "a-5", "ocamba", "in_flight")

    view = await status.collect(
        store, ["ocamba", "omneo", "import_batch"], {}, {}, ErrorRatio(Metrics())
    )
    by = {b.backend: b for b in view.backends}
    assert not view.dispatcher
    assert {b.circuit for b in view.backends} == {"unknown"}
    assert {b.error_ratio for b in view.backends} == {None}
    assert (by["omneo"].dead, by["omneo"].unconfirmed, by["omneo"].queue_depth) == (1, 1, 0)
    assert (by["import_batch"].failed, by["import_batch"].queue_depth) == (1, 1)
    assert by["ocamba"].queue_depth == 1 and by["ocamba"].oldest_pending_seconds >= 0
    failures = {f.external_id: f for f in view.recent_failures}
    assert set(failures) == {"a-1", "a-2", "a-3"}  # unconfirmed is not a failure
    assert failures["a-1"].last_error == "omneo batch: HTTP 400: bad email [email]"
    assert failures["a-2"].last_error == "phone [phone] refused"
    ids = [f.delivery_id for f in view.recent_failures]
    assert ids == sorted(ids, reverse=True)


@pytest.mark.anyio
async def test_status_reads_the_breakers_and_pacers_of_this_process(store: Store) -> None:
    now = [1000.0]
    breaker = CircuitBreaker(failures=1, cooldown=30, max_cooldown=30, clock=lambda: now[0])
    breaker.record(breaker.acquire() or pytest.fail("closed circuit gave no permit"), "down")
    pacer = FixedWindowPacer(10, 150, max_in_flight=4, clock=lambda: now[0] + 0.25)
    for _ in range(3):
        pacer.release(await pacer.acquire())
    unlimited = FixedWindowPacer(None, None, max_in_flight=8)

    view = await status.collect(
        store,
        ["ocamba", "omneo", "import_batch"],
        {"ocamba": breaker, "omneo": CircuitBreaker(failures=5, cooldown=1, max_cooldown=1)},
        {"ocamba": pacer, "omneo": unlimited},
        ErrorRatio(Metrics()),
    )
    by = {b.backend: b for b in view.backends}
    assert view.dispatcher
    assert (by["ocamba"].circuit, by["omneo"].circuit, by["import_batch"].circuit) == (
        "open",
        "closed",
        "unknown",
    )
    limit = by["ocamba"].rate_limit
    assert limit is not None
    second, minute = limit.windows
    assert (second.seconds, second.limit, second.remaining) == (1.0, 10, 7)
    assert second.resets_in == pytest.approx(0.75)
    assert (minute.limit, minute.remaining) == (150, 147)
    assert (limit.in_flight, limit.max_in_flight) == (0, 4)
    assert by["omneo"].rate_limit is None  # no windows: nothing to run out of


def test_the_error_ratio_covers_the_recent_window_only() -> None:
    metrics = Metrics()
    now = [0.0]
    ratio = ErrorRatio(metrics, window=300, clock=lambda: now[0])
    outcomes = metrics.deliveries

    outcomes.labels("omneo", "retry").inc(30)
    outcomes.labels("omneo", "accepted").inc(70)
    now[0] = 10
    covered, by = ratio.measure(["omneo", "ocamba"])
    assert covered == 10
    assert by["omneo"][1] == 100 and by["omneo"][0] == pytest.approx(0.3)
    assert by["ocamba"] == (None, 0)

    # Ten minutes on, only what happened in the last five counts.
    for t in range(20, 620, 10):
        now[0] = t
        ratio.measure(["omneo"])
    outcomes.labels("omneo", "confirmed").inc(9)
    outcomes.labels("omneo", "dead").inc(1)
    now[0] = 630
    covered, by = ratio.measure(["omneo"])
    assert 300 <= covered <= 310
    assert by["omneo"][1] == 10 and by["omneo"][0] == pytest.approx(0.1)


def test_headroom_changes_nothing_acquire_would_not() -> None:
    now = [5.5]
    pacer = FixedWindowPacer(2, None, max_in_flight=1, clock=lambda: now[0])

    async def two() -> None:
        for _ in range(2):
            pacer.release(await pacer.acquire())

    asyncio.run(two())
    assert [w.remaining for w in pacer.headroom().windows] == [0]
    assert [w.remaining for w in pacer.headroom().windows] == [0]
    now[0] = 6.1
    assert [w.remaining for w in pacer.headroom().windows] == [2]


@pytest.mark.anyio
async def test_status_says_how_much_of_the_queue_is_bulk(store: Store) -> None:
    profiles = [NormalizedProfile(external_id=f"b-{i}") for i in range(3)]
    await store.accept(NewRequest("bulk-1", "crm", ["omneo"], profiles, time.time(), lane="bulk"))
    await store.accept(
        NewRequest("rt-1", "crm", ["omneo"], [NormalizedProfile(external_id="r")], time.time())
    )
    view = await status.collect(store, ["omneo"], {}, {}, ErrorRatio(Metrics()))
    [omneo] = view.backends
    assert (omneo.queue_depth, omneo.queue_bulk) == (4, 3)
