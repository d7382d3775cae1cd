"""Every Prometheus metric the gateway exports, named and documented in one place.

Each app gets its own registry so that several apps (tests, the demo) can live
in one process without clashing over global metric names.
"""

from __future__ import annotations

import functools
from typing import TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LAG_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600)

_Metric = TypeVar("_Metric", Counter, Histogram)


def child(metric: _Metric, *labels: str) -> _Metric:
    """`metric.labels(*labels)`, looked up once per label set: `.labels()`
    validates and takes a lock on every call, and the request path's label sets
    (routes, methods, statuses, apps, outcomes) are few."""
    return cast(_Metric, _child(metric, labels))


@functools.lru_cache(maxsize=4096)
def _child(metric: Counter | Histogram, labels: tuple[str, ...]) -> Counter | Histogram:
    return metric.labels(*labels)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        # Inbound API
        self.http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered, by route, method and status code",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "gateway_http_request_seconds",
            "Time to answer an HTTP request, by route and method",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inbound_requests = Counter(
            "gateway_inbound_requests",
            "Profile write requests, by calling app and outcome"
            " (accepted, replayed, invalid, conflict, unauthorized, too_large, over_quota, error)",
            ["app", "outcome"],
            registry=r,
        )
        self.inbound_profiles = Counter(
            "gateway_inbound_profiles",
            "Profiles in write requests, by calling app and outcome",
            ["app", "outcome"],
            registry=r,
        )
        # Per-app quotas (gateway/quotas.py): only apps with a quota, and apps
        # come from GATEWAY_API_TOKENS, so the label sets stay few.
        self.app_quota_rejected = Counter(
            "gateway_app_quota_rejected",
            "Profile writes refused by the calling app's quota, by app and reason"
            " (rate: 429 until enough tokens; burst: 413, more profiles than the burst)",
            ["app", "reason"],
            registry=r,
        )
        self.app_quota_profiles = Counter(
            "gateway_app_quota_profiles",
            "Profiles counted against the calling app's quota, by app and outcome"
            " (admitted: stored; rejected: refused by the quota)",
            ["app", "outcome"],
            registry=r,
        )
        self.store_write_latency = Histogram(
            "gateway_store_write_seconds",
            "Time from handing a write to the store until it is committed",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        # Delivery
        self.deliveries = Counter(
            "gateway_deliveries",
            "Delivery attempts ended, by backend and outcome"
            " (accepted, confirmed, failed, retry, dead, unchanged, unsupported; merged:"
            " carried by a claim of an earlier write of the same person)",
            ["backend", "outcome"],
            registry=r,
        )
        self.claimed = Counter(
            "gateway_deliveries_claimed",
            "Deliveries claimed for sending, by backend and lane (realtime, bulk)",
            ["backend", "lane"],
            registry=r,
        )
        self.backend_calls = Histogram(
            "gateway_backend_call_seconds",
            "Backend HTTP call latency, by backend, endpoint and status",
            ["backend", "endpoint", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "gateway_queue_depth",
            "Deliveries waiting to be sent (pending or retrying), by backend",
            ["backend"],
            registry=r,
        )
        self.queue_depth_lane = Gauge(
            "gateway_queue_depth_by_lane",
            "Deliveries waiting to be sent, by backend and lane (realtime, bulk)",
            ["backend", "lane"],
            registry=r,
        )
        self.oldest_pending_age = Gauge(
            "gateway_oldest_pending_seconds",
            "Age of the oldest delivery still waiting to be sent, by backend",
            ["backend"],
            registry=r,
        )
        self.retries = Counter(
            "gateway_retries",
            "Deliveries scheduled for another attempt, by backend",
            ["backend"],
            registry=r,
        )
        self.rate_limit_wait = Counter(
            "gateway_rate_limit_wait_seconds",
            "Time spent waiting for a backend's rate limit, by backend",
            ["backend"],
            registry=r,
        )
        self.batch_size = Histogram(
            "gateway_batch_size",
            "Deliveries per backend call, by backend",
            ["backend"],
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=r,
        )

        self.circuit_state = Gauge(
            "gateway_circuit_state",
            "Circuit breaker of each backend: 0 closed (sending), 1 half-open (one probe"
            " batch), 2 open (not sending: the backend looks down)",
            ["backend"],
            registry=r,
        )
        self.sending_leader = Gauge(
            "gateway_sending_leader",
            "1 while this replica is the elected sender of a rate-limited backend,"
            " 0 while another one is and this one stands by",
            ["backend"],
            registry=r,
        )
        self.circuit_transitions = Counter(
            "gateway_circuit_transitions",
            "Circuit breaker state changes, by backend and the state entered"
            " (open, half_open, closed)",
            ["backend", "to"],
            registry=r,
        )

        # Omneo webhooks
        self.webhooks = Counter(
            "gateway_webhooks",
            "Omneo webhooks received, by event and result"
            " (applied, duplicate, unmatched, bad_signature)",
            ["event", "result"],
            registry=r,
        )
        self.confirmation_lag = Histogram(
            "gateway_confirmation_lag_seconds",
            "Time from a delivery being accepted by Omneo to its webhook confirming it",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.unconfirmed = Gauge(
            "gateway_unconfirmed_deliveries",
            "Omneo deliveries whose webhook did not arrive within the confirm timeout",
            registry=r,
        )
