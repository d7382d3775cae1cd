"""The webhook applier's and the retention purge's loops, on a clock stepped by hand."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import pytest

from gateway.clock import FakeClock
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.retention import DAY, RetentionPurger
from gateway.store.base import AppliedEvent, PurgeResult, Store, StoreError
from gateway.webhooks.applier import WebhookApplier

pytestmark = pytest.mark.anyio

BOUND = 5.0  # real seconds a test may wait for a loop before it fails
START = 1_000_000.0


class Calls:
    """The store calls the loops make, with the clock's time of each."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.applies: list[float] = []
        self.cutoffs: list[float] = []  # mark_unconfirmed's cutoff, or purge's
        self.fail = 0  # how many of the next calls raise StoreError
        self.called = asyncio.Event()

    def _call(self) -> None:
        self.called.set()
        if self.fail:
            self.fail -= 1
            raise StoreError("database unavailable")

    async def apply_webhooks(self, backend: str, limit: int = 100) -> list[AppliedEvent]:
        self.applies.append(self.clock.now())
        self._call()
        return []

    async def mark_unconfirmed(self, backend: str, cutoff: float) -> int:
        self.cutoffs.append(cutoff)
        return 0

    async def count_state(self, backend: str, state: str) -> int:
        return 0

    async def purge(self, cutoff: float) -> PurgeResult:
        self.cutoffs.append(cutoff)
        self._call()
        return PurgeResult(writes=0, webhook_events=0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


async def idle(loop: WebhookApplier | RetentionPurger) -> None:
    await asyncio.wait_for(loop.worker.idle(), BOUND)


async def test_the_applier_polls_every_interval_and_at_once_when_notified(
    clock: FakeClock,
) -> None:
    calls = Calls(clock)
    settings = Settings(omneo_confirm_timeout=900)
    applier = WebhookApplier(
        cast(Store, calls), settings, Metrics(), poll_interval=2.0, clock=clock
    )
    await applier.start()
    try:
        await idle(applier)
        assert calls.applies == [START]
        assert calls.cutoffs == [START - 900]  # the sweep's cutoff is on the clock
        clock.advance(1.9)
        await idle(applier)
        assert calls.applies == [START]
        applier.notify()  # a webhook was stored: no waiting out the poll
        await idle(applier)
        assert calls.applies == [START, START + 1.9]
        # ...but the timeout sweep runs once per interval, not once per event.
        for _ in range(5):
            applier.notify()
            await idle(applier)
        assert len(calls.applies) == 7 and calls.cutoffs == [START - 900]
        clock.advance(2.0)
        await idle(applier)
        assert calls.applies[-1] == START + 3.9
        assert calls.cutoffs == [START - 900, START + 3.9 - 900]
    finally:
        await applier.stop()
    assert not applier.worker.running


async def test_the_applier_logs_a_store_failure_and_goes_on(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls(clock)
    calls.fail = 1
    applier = WebhookApplier(
        cast(Store, calls), Settings(), Metrics(), poll_interval=2.0, clock=clock
    )
    with caplog.at_level(logging.ERROR, logger="gateway.webhooks"):
        await applier.start()
        try:
            await idle(applier)
            assert [r.getMessage() for r in caplog.records] == ["applying webhooks failed"]
            clock.advance(2.0)
            await idle(applier)
            assert calls.applies == [START, START + 2.0]
            assert calls.cutoffs == [START + 2.0 - Settings().omneo_confirm_timeout]
        finally:
            await applier.stop()


async def test_retention_purges_after_the_first_delay_then_every_interval(
    clock: FakeClock,
) -> None:
    calls = Calls(clock)
    settings = Settings(retention_days=2, purge_interval=3600)
    purger = RetentionPurger(cast(Store, calls), settings, first_delay=60, clock=clock)
    await purger.start()
    try:
        await idle(purger)
        assert calls.cutoffs == []  # startup stays quick: no purge yet
        clock.advance(60)
        await idle(purger)
        assert calls.cutoffs == [START + 60 - 2 * DAY]
        clock.advance(3599)
        await idle(purger)
        assert len(calls.cutoffs) == 1
        clock.advance(1)
        await idle(purger)
        assert calls.cutoffs == [START + 60 - 2 * DAY, START + 3660 - 2 * DAY]
    finally:
        await purger.stop()
    assert not purger.worker.running


async def test_retention_logs_a_failed_purge_and_tries_again_next_interval(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls(clock)
    calls.fail = 1
    settings = Settings(retention_days=1, purge_interval=100)
    purger = RetentionPurger(cast(Store, calls), settings, first_delay=0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="gateway.retention"):
        await purger.start()
        try:
            await idle(purger)
            assert [r.getMessage() for r in caplog.records] == [
                "retention purge failed; trying again later"
            ]
            clock.advance(100)
            await idle(purger)
            assert calls.cutoffs == [START - DAY, START + 100 - DAY]
        finally:
            await purger.stop()


async def test_retention_off_runs_no_loop(clock: FakeClock) -> None:
    calls = Calls(clock)
    purger = RetentionPurger(
        cast(Store, calls), Settings(retention_days=0), first_delay=0, clock=clock
    )
    await purger.start()
    assert not purger.worker.running
    await purger.stop()
    assert calls.cutoffs == []
