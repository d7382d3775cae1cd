"""What each claimed delivery becomes, from its adapter's outcome: the state
to record, the retry's time, the attempt spent or refunded, dead letters; and
the delivery metrics counted once each."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence

from gateway.backends.base import Outcome
from gateway.dispatch.retry import RetryPolicy
from gateway.lifecycle import OUTCOME_STATE, RETRY_EXHAUSTED
from gateway.metrics import Metrics
from gateway.schema import Backend
from gateway.store.base import Claim, DeliveryResult

log = logging.getLogger("gateway.dispatch")


class Judge:
    def __init__(
        self, policy: RetryPolicy, metrics: Metrics, rng: random.Random, now: float
    ) -> None:
        self.policy = policy
        self.metrics = metrics
        self.rng = rng
        self.now = now

    def results(
        self,
        backend: Backend,
        claims: Sequence[Claim],
        outcomes: Sequence[Outcome],
        backend_down: bool,
        hold: float,
        remember: Mapping[int, dict[str, str]],
    ) -> list[DeliveryResult]:
        """`backend_down`: the breaker judges the backend down (a try that found
        it so is refunded and held `hold` seconds); `remember`: per delivery
        the digests to store with an accepted or confirmed outcome."""
        by_id = {o.delivery_id: o for o in outcomes}
        now = self.now
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
                delay = self.policy.delay(attempts, outcome.retry_after, self.rng)
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
