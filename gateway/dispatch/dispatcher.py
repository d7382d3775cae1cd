"""Claims due deliveries, batches them, hands them to an adapter, records outcomes.

One set of worker tasks per backend, so a slow or dead backend only ever holds
its own workers: the inbound API and the other backends go on. Every delivery
is leased before it is sent; if this process dies mid-send the lease expires
and another worker sends it again (at-least-once). A circuit breaker per
backend (see breaker.py) stops the workers of a backend that is down from
claiming at all, so its deliveries wait in the queue with their attempts intact.
Each backend's claims take the `realtime` lane first and `bulk` first every
`bulk_share`-th batch (see _lanes), one lane a batch, so a backfill neither
delays real-time writes behind it nor starves under them. Each backend also
has `realtime_workers` workers (1) that claim only real-time writes: a
rate-limited backend's bulk batch can hold a worker for most of a lease while
its calls are paced, and without them a real-time write would wait for one of
those to finish. Real-time calls then go before bulk ones at the backend's
pacer (transport/turns.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence

from gateway.backends.base import (
    BackendAdapter,
    Item,
    NotSent,
    Outcome,
    PermanentError,
    TransientError,
)
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.config import Settings
from gateway.crypto import PLAINTEXT, Sealer
from gateway.dispatch import changes, lanes, spans
from gateway.dispatch.breaker import CircuitBreaker, CircuitState, Permit, Verdict, verdict_of
from gateway.dispatch.leadership import LEADER_RETRY, Leadership
from gateway.dispatch.results import Judge
from gateway.dispatch.retry import RetryPolicy
from gateway.lifecycle import OUTCOME_STATE
from gateway.metrics import Metrics
from gateway.schema import Backend, Lane
from gateway.store.base import Claim, DeliveryResult, Store, StoreError
from gateway.worker import BackgroundWorker

log = logging.getLogger("gateway.dispatch")

# Bounds recording the release of a batch cut short by stop(), so a store that
# hangs cannot hang shutdown; unrecorded, the lease expiry still frees it.
RELEASE_TIMEOUT = 5.0
REALTIME_ONLY: tuple[Lane, ...] = ("realtime",)
# Claims a send may add to fill the room change detection made in its batch.
TOP_UPS = 20
RELEASED = "released at shutdown mid-send; the backend may have it, so it is sent again"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        adapters: Mapping[Backend, BackendAdapter],
        settings: Settings,
        metrics: Metrics,
        *,
        poll_interval: float | None = None,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
        sealer: Sealer | None = None,
    ) -> None:
        """`sealer`: whose blind-index key keys the change digests; by default
        the store's own (the key its lookup values are stored under)."""
        self.store = store
        found = sealer or getattr(store, "sealer", None)
        self.sealer: Sealer = found if isinstance(found, Sealer) else PLAINTEXT
        self.adapters = dict(adapters)
        self.settings = settings
        self.metrics = metrics
        self.policy = RetryPolicy.from_settings(settings)
        self.poll_interval = poll_interval or settings.poll_interval
        self.owner = f"dispatcher-{uuid.uuid4().hex[:12]}"
        self._rng = rng or random.Random()
        self.clock = clock
        self._stopping = asyncio.Event()
        self.leadership = Leadership(store, settings, clock, self._stopping, self._observe_lead)
        self._exclusive = set(settings.rate_limited_backends())  # sent by one replica only
        self.breakers = {b: self._new_breaker(b) for b in self.adapters}
        # Batches claimed per backend (by all its workers here), for the lanes'
        # turns: every `bulk_share`-th takes bulk first (see _lanes).
        self._turns: dict[Backend, int] = dict.fromkeys(self.adapters, 0)
        self.workers: dict[Backend, list[BackgroundWorker]] = {
            backend: [
                self._worker(f"{backend}-{n}", backend, adapter, None)
                for n in range(settings.workers_per_backend)
            ]
            + [
                self._worker(f"{backend}-realtime-{n}", backend, adapter, REALTIME_ONLY)
                for n in range(settings.realtime_workers)
            ]
            for backend, adapter in self.adapters.items()
        }
        for backend in self.adapters:
            metrics.circuit_state.labels(backend).set(CircuitState.CLOSED)

    def _worker(
        self, name: str, backend: Backend, adapter: BackendAdapter, only: tuple[Lane, ...] | None
    ) -> BackgroundWorker:
        return BackgroundWorker(
            name,
            functools.partial(self._step, backend, adapter, only),
            interval=self.poll_interval,
            clock=self.clock,
            logger=log,
            failure="dispatcher step failed",
        )

    def _new_breaker(self, backend: Backend) -> CircuitBreaker:
        return CircuitBreaker(
            failures=self.settings.breaker_failures,
            cooldown=self.settings.breaker_cooldown,
            max_cooldown=self.settings.breaker_max_cooldown,
            clock=self.clock.monotonic,
            rng=self._rng,
            on_transition=functools.partial(self._circuit_moved, backend),
        )

    def _circuit_moved(self, backend: Backend, before: CircuitState, to: CircuitState) -> None:
        self.metrics.circuit_state.labels(backend).set(to)
        self.metrics.circuit_transitions.labels(backend, to.name.lower()).inc()
        extra = {"backend": backend, "from": before.name.lower(), "to": to.name.lower()}
        if to is CircuitState.OPEN:
            probe_in = self.breakers[backend].wait_time()
            log.warning("circuit open: backend looks down", extra={**extra, "probe_in": probe_in})
        elif to is CircuitState.CLOSED:
            log.info("circuit closed: backend answers again", extra=extra)
        else:
            log.info("circuit half-open: sending a probe batch", extra=extra)

    async def start(self) -> None:
        # Other replicas' writes wake us too (PostgreSQL LISTEN/NOTIFY).
        await self.store.subscribe(lambda backend: self.notify([backend]))
        self._stopping.clear()
        for worker in self._all_workers():
            worker.start()

    async def stop(self) -> None:
        """Let each worker finish the batch it holds (a deploy should not leave
        deliveries waiting out their lease), for at most `shutdown_grace`
        seconds; then cancel. A send cut short is released in the store at
        once (`retrying`, due now, the attempt counted since the backend may
        have taken it), so another replica or the next start sends it again
        without waiting out the lease."""
        self._stopping.set()  # ends a linger or a takeover wait within a step
        grace = self.settings.shutdown_grace
        await asyncio.gather(*(w.stop(grace) for w in self._all_workers()))

    def notify(self, backends: Iterable[Backend]) -> None:
        """New deliveries were committed: wake those backends' workers now."""
        for backend in backends:
            for worker in self.workers.get(backend, ()):
                worker.wake()

    async def idle(self) -> None:
        """Return once every worker rests between steps (for tests)."""
        await asyncio.gather(*(w.idle() for w in self._all_workers()))

    def _all_workers(self) -> list[BackgroundWorker]:
        return [w for ws in self.workers.values() for w in ws]

    def _observe_lead(self, backend: Backend, leading: bool) -> None:
        self.metrics.sending_leader.labels(backend).set(1 if leading else 0)

    # -- one worker's step ---------------------------------------------------

    async def _step(
        self, backend: Backend, adapter: BackendAdapter, only: tuple[Lane, ...] | None = None
    ) -> float | None:
        """Claim and send one batch; returns the rest before the next (see
        BackgroundWorker): None waits for a wake-up or the next poll. `only`:
        the lanes this worker claims (None: both, in turns)."""
        breaker = self.breakers[backend]
        if backend in self._exclusive and not await self.leadership.leading(backend):
            # Another replica sends to this backend, so its rate limit holds
            # in total; stand by and take over if that replica dies.
            return LEADER_RETRY
        permit = breaker.acquire()
        if permit is None:
            # The backend looks down: claim nothing, so its deliveries stay
            # queued with their attempts unspent, until the probe's time.
            wait = breaker.wait_time()
            return self.poll_interval if wait is None else wait
        try:
            claims, lanes = await self._claim_batch(backend, adapter.batch_size, only)
        except StoreError:
            breaker.release(permit)
            log.exception("claim failed", extra={"backend": backend})
            return self.poll_interval
        if not claims:
            breaker.release(permit)
            return None
        await self._send(backend, adapter, claims, permit, lanes)
        return 0

    def _lanes(self, backend: Backend) -> tuple[Lane, ...]:
        """The lane order of this backend's next claim, counted as one turn (lanes.py)."""
        turn = self._turns[backend]
        self._turns[backend] = turn + 1
        return lanes.order(turn, self.settings.bulk_share)

    async def _claim(self, backend: Backend, size: int, lanes: tuple[Lane, ...]) -> list[Claim]:
        lease, settle = self.settings.lease_seconds, self.settings.settle(backend)
        claims = await self.store.claim(backend, size, self.owner, lease, lanes, settle)
        for lane in {c.lane for c in claims}:
            self.metrics.claimed.labels(backend, lane).inc(sum(c.lane == lane for c in claims))
        # Writes a claim ended `merged` (they ride in its payload): counted once.
        if merged := sum(c.merged_now for c in claims):
            self.metrics.deliveries.labels(backend, "merged").inc(merged)
        return claims

    async def _claim_batch(
        self, backend: Backend, size: int, only: tuple[Lane, ...] | None
    ) -> tuple[list[Claim], tuple[Lane, ...]]:
        order = only or self._lanes(backend)
        # One lane a batch, the first with due work: a real-time write in a bulk
        # batch would stay in flight (and hold the person's next write behind
        # it) until the whole batch is done, minutes under Ocamba's pacing.
        for lane in order:
            lanes: tuple[Lane, ...] = (lane,)
            if claims := await self._claim(backend, size, lanes):
                break
        if not claims:
            if only is None:
                # Nothing claimed is no turn: the share counts batches sent.
                self._turns[backend] -= 1
            return claims, lanes
        if len(claims) < size:
            # A partial batch waits until its oldest write is `batch_linger` old,
            # so a burst arriving over a few milliseconds still travels as one call.
            wait = min(c.created_at for c in claims) + self.settings.batch_linger
            wait -= self.clock.now()
            if wait > 0 and not self._stopping.is_set():
                await self.clock.wait(self._stopping, wait)  # stopping: send what we hold now
                claims += await self._claim(backend, size - len(claims), lanes)
        return claims, lanes

    async def _sorted(
        self, backend: Backend, adapter: BackendAdapter, claims: list[Claim]
    ) -> tuple[list[Item], list[Outcome], dict[int, dict[str, str]]]:
        items = [Item(c.delivery_id, c.profile, c.backend_id, lane=c.lane) for c in claims]
        return await changes.sort_items(self.store, self.sealer, backend, adapter, claims, items)

    async def _send(
        self,
        backend: Backend,
        adapter: BackendAdapter,
        claims: list[Claim],
        permit: Permit,
        lanes: tuple[Lane, ...],
    ) -> None:
        items, skipped, remember = await self._sorted(backend, adapter, claims)
        # Change detection made room in a full batch: fill it with more due
        # writes, so a re-sync with 1 % changed costs about 1 % of the calls,
        # not a call per batch. Bounded, so one send holds few leases.
        asked, got, rounds = adapter.batch_size, len(claims), 0
        while skipped and got == asked and len(items) < adapter.batch_size and rounds < TOP_UPS:
            rounds += 1
            asked = adapter.batch_size - len(items)
            try:
                more = await self._claim(backend, asked, lanes)
            except StoreError:
                log.exception("claim failed", extra={"backend": backend})
                break
            got = len(more)
            more_items, more_skipped, more_remember = await self._sorted(backend, adapter, more)
            claims += more
            items += more_items
            skipped += more_skipped
            remember.update(more_remember)
            if not more_skipped:
                break
        if not items:
            # Nothing to send: no call, so nothing for the breaker to judge.
            self.breakers[backend].release(permit)
            await self._record(backend, self._results(backend, claims, skipped))
            return
        self.metrics.batch_size.labels(backend).observe(len(items))
        verdict: Verdict | None = None
        try:
            outcomes = await spans.deliver_traced(backend, adapter, claims, items)
        except asyncio.CancelledError:
            await self._release(backend, claims)
            raise
        except TransientError as exc:
            sent = not isinstance(exc, NotSent)
            outcomes = [
                Outcome(
                    i.delivery_id,
                    "retry",
                    str(exc),
                    retry_after=exc.retry_after,
                    sent=sent,
                    unavailable=exc.unavailable,
                )
                for i in items
            ]
        except PermanentError as exc:
            outcomes = [Outcome(i.delivery_id, "failed", str(exc)) for i in items]
        except Exception as exc:
            # An adapter bug must not lose writes: retry, and let attempts run out.
            log.exception("adapter raised", extra={"backend": backend})
            outcomes = [Outcome(i.delivery_id, "retry", f"internal error: {exc!r}") for i in items]
            verdict = "none"  # says nothing about the backend
        breaker = self.breakers[backend]
        breaker.record(permit, verdict or verdict_of(outcomes))
        # Once the breaker judges the backend down, a failure to reach it is the
        # backend's, not the delivery's: spending attempts on it would turn an
        # outage of a few minutes into dead letters.
        backend_down = breaker.state is not CircuitState.CLOSED
        # A batch refunded as "backend down" is held past the next probe, so the
        # probe carries other deliveries: were this batch's failure its own
        # content (a poison profile the backend 5xxs on), it would otherwise be
        # every probe, and refunded forever, and the circuit would never close.
        hold = (breaker.wait_time() or 0.0) + breaker.cooldown if backend_down else 0.0
        results = self._results(
            backend,
            claims,
            [*outcomes, *skipped],
            backend_down=backend_down,
            hold=hold,
            remember=remember,
        )
        await self._record(backend, results)

    def _results(
        self,
        backend: Backend,
        claims: Sequence[Claim],
        outcomes: Sequence[Outcome],
        *,
        backend_down: bool = False,
        hold: float = 0.0,
        remember: Mapping[int, dict[str, str]] | None = None,
    ) -> list[DeliveryResult]:
        judge = Judge(self.policy, self.metrics, self._rng, self.clock.now())
        return judge.results(backend, claims, outcomes, backend_down, hold, remember or {})

    async def _record(self, backend: Backend, results: list[DeliveryResult]) -> None:
        try:
            await self.store.record(self.owner, results)
        except StoreError:
            # The leases expire and the deliveries are sent again: at-least-once.
            log.exception("recording outcomes failed", extra={"backend": backend})

    async def _release(self, backend: Backend, claims: Sequence[Claim]) -> None:
        """Hand a batch cut short by shutdown back to the queue, due now. Its
        attempt counts: the backend may have taken it before the cut."""
        now = self.clock.now()
        results = [
            DeliveryResult(c.delivery_id, OUTCOME_STATE["retry"], RELEASED, next_attempt_at=now)
            for c in claims
        ]
        try:
            await asyncio.wait_for(self.store.record(self.owner, results), RELEASE_TIMEOUT)
        except (StoreError, TimeoutError):
            log.exception("releasing a batch at shutdown failed", extra={"backend": backend})
            return
        self.metrics.deliveries.labels(backend, "retry").inc(len(results))
        self.metrics.retries.labels(backend).inc(len(results))
        log.warning(
            "released a batch cut short by shutdown",
            extra={"backend": backend, "deliveries": len(results)},
        )
