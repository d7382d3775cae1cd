"""Claims due deliveries, batches them, hands them to an adapter, records outcomes.

One set of worker tasks per backend, so a slow or dead backend only ever holds
its own workers: the inbound API and the other backends go on. Every delivery
is leased before it is sent; if this process dies mid-send the lease expires
and another worker sends it again (at-least-once). A circuit breaker per
backend (see breaker.py) stops the workers of a backend that is down from
claiming at all, so its deliveries wait in the queue with their attempts intact.
Each backend's claims take the `realtime` lane first and `bulk` first every
`bulk_share`-th batch (see _lanes), so a backfill neither delays real-time
writes behind it nor starves under them.
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
from gateway.dispatch.retry import RetryPolicy
from gateway.lifecycle import OUTCOME_STATE, RETRY_EXHAUSTED
from gateway.metrics import Metrics
from gateway.schema import Backend, Lane
from gateway.store.base import Claim, DeliveryResult, Store, StoreError
from gateway.worker import BackgroundWorker

log = logging.getLogger("gateway.dispatch")

LEADER_RETRY = 1.0  # seconds between tries to become a rate-limited backend's sender
# A new leader starts sending no sooner than this after taking over (see _leading).
TAKEOVER_QUIET = 1.0
# Bounds recording the release of a batch cut short by stop(), so a store that
# hangs cannot hang shutdown; unrecorded, the lease expiry still frees it.
RELEASE_TIMEOUT = 5.0
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
        self._following: set[Backend] = set()  # rate-limited backends led elsewhere
        self._exclusive = set(settings.rate_limited_backends())  # sent by one replica only
        self.breakers = {b: self._new_breaker(b) for b in self.adapters}
        # Batches claimed per backend (by all its workers here), for the lanes'
        # turns: every `bulk_share`-th takes bulk first (see _lanes).
        self._turns: dict[Backend, int] = dict.fromkeys(self.adapters, 0)
        self.workers: dict[Backend, list[BackgroundWorker]] = {
            backend: [
                BackgroundWorker(
                    f"{backend}-{n}",
                    functools.partial(self._step, backend, adapter),
                    interval=self.poll_interval,
                    clock=clock,
                    logger=log,
                    failure="dispatcher step failed",
                )
                for n in range(settings.workers_per_backend)
            ]
            for backend, adapter in self.adapters.items()
        }
        for backend in self.adapters:
            metrics.circuit_state.labels(backend).set(CircuitState.CLOSED)

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

    # -- one worker's step ---------------------------------------------------

    async def _step(self, backend: Backend, adapter: BackendAdapter) -> float | None:
        """Claim and send one batch; returns the rest before the next (see
        BackgroundWorker): None waits for a wake-up or the next poll."""
        breaker = self.breakers[backend]
        if backend in self._exclusive and not await self._leading(backend):
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
            claims = await self._claim_batch(backend, adapter.batch_size)
        except StoreError:
            breaker.release(permit)
            log.exception("claim failed", extra={"backend": backend})
            return self.poll_interval
        if not claims:
            breaker.release(permit)
            return None
        # Writes a claim ended `merged` (they ride in its payload): counted once.
        if merged := sum(c.merged_now for c in claims):
            self.metrics.deliveries.labels(backend, "merged").inc(merged)
        await self._send(backend, adapter, claims, permit)
        return 0

    async def _leading(self, backend: Backend) -> bool:
        try:
            leading = await self.store.lead(backend)
        except StoreError:
            log.exception("leadership check failed", extra={"backend": backend})
            return False
        if not leading:
            self._following.add(backend)
        elif backend in self._following:
            # Taking over from a leader that died: our pacer knows nothing of
            # what it sent in the current window, so wait for the next one.
            self._following.discard(backend)
            window = self.settings.rate_window(backend)
            wait = window - self.clock.now() % window
            if wait < TAKEOVER_QUIET:
                # The dead leader's last requests may still be on their way, or
                # queued at the backend: landing in the window we would start
                # in, they would push it over its limit. Start one window later.
                wait += window
            log.warning("took over sending", extra={"backend": backend, "wait": wait})
            await self.clock.wait(self._stopping, wait)
        return leading

    def _lanes(self, backend: Backend) -> tuple[Lane, ...]:
        """The lane order of this backend's next claim, counted as one turn (lanes.py)."""
        turn = self._turns[backend]
        self._turns[backend] = turn + 1
        return lanes.order(turn, self.settings.bulk_share)

    async def _claim_batch(self, backend: Backend, size: int) -> list[Claim]:
        lease = self.settings.lease_seconds
        lanes = self._lanes(backend)
        claims = await self.store.claim(backend, size, self.owner, lease, lanes)
        if not claims:
            # Nothing claimed is no turn: the share counts batches sent.
            self._turns[backend] -= 1
            return claims
        if len(claims) < size:
            # A partial batch waits until its oldest write is `batch_linger` old,
            # so a burst arriving over a few milliseconds still travels as one call.
            wait = min(c.created_at for c in claims) + self.settings.batch_linger
            wait -= self.clock.now()
            if wait > 0 and not self._stopping.is_set():
                await self.clock.wait(self._stopping, wait)  # stopping: send what we hold now
                claims += await self.store.claim(
                    backend, size - len(claims), self.owner, lease, lanes
                )
        for lane in {c.lane for c in claims}:
            self.metrics.claimed.labels(backend, lane).inc(sum(c.lane == lane for c in claims))
        return claims

    async def _send(
        self, backend: Backend, adapter: BackendAdapter, claims: list[Claim], permit: Permit
    ) -> None:
        items = [Item(c.delivery_id, c.profile, c.backend_id) for c in claims]
        items, skipped, remember = await changes.sort_items(
            self.store, self.sealer, backend, adapter, claims, items
        )
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
        by_id = {o.delivery_id: o for o in outcomes}
        now = self.clock.now()
        results = []
        for claim in claims:
            outcome = by_id.get(claim.delivery_id) or Outcome(
                claim.delivery_id, "retry", "the adapter returned no outcome"
            )
            if outcome.state != "retry":
                digests = None
                if remember and outcome.state in ("accepted", "confirmed"):
                    digests = {
                        name: d
                        for name, d in remember.get(claim.delivery_id, {}).items()
                        if name not in outcome.not_applied
                    } or None
                results.append(
                    DeliveryResult(
                        claim.delivery_id,
                        OUTCOME_STATE[outcome.state],
                        outcome.error,
                        outcome.backend_id,
                        match_key=outcome.match_key,
                        sent_at=outcome.sent_at,
                        digests=digests,
                    )
                )
                self.metrics.deliveries.labels(backend, outcome.state).inc()
                continue
            # A try that never reached the backend is handed back, not spent;
            # so is one that found it down while the breaker says it is down.
            spent = outcome.sent and not (outcome.unavailable and backend_down)
            attempts = claim.attempts if spent else claim.attempts - 1
            if spent and self.policy.exhausted(attempts):
                error = f"gave up after {attempts} attempts: {outcome.error}"
                results.append(
                    DeliveryResult(claim.delivery_id, RETRY_EXHAUSTED, error, outcome.backend_id)
                )
                self.metrics.deliveries.labels(backend, "dead").inc()
                log.warning(
                    "delivery dead", extra={"backend": backend, "delivery_id": claim.delivery_id}
                )
            else:
                delay = self.policy.delay(attempts, outcome.retry_after, self._rng)
                if not spent and outcome.unavailable:
                    delay = max(delay, hold)
                results.append(
                    DeliveryResult(
                        claim.delivery_id,
                        OUTCOME_STATE["retry"],
                        outcome.error,
                        outcome.backend_id,
                        next_attempt_at=now + delay,
                        refund_attempt=not spent,
                    )
                )
                self.metrics.deliveries.labels(backend, "retry").inc()
                self.metrics.retries.labels(backend).inc()
        return results
