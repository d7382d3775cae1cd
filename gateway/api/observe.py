"""ASGI middleware timing every request, labelled by route template, not raw path."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import Metrics


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # `.labels()` validates and locks on every call; the label sets are few
        # (routes x methods x statuses), so each child is looked up once.
        self._counts: dict[tuple[str, str, int], Counter] = {}
        self._latencies: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label so scanners cannot blow up cardinality.
            label = getattr(route, "path", "unmatched")
            method = scope["method"]
            count = self._counts.get((label, method, status))
            if count is None:
                count = self.metrics.http_requests.labels(label, method, str(status))
                self._counts[(label, method, status)] = count
            count.inc()
            latency = self._latencies.get((label, method))
            if latency is None:
                latency = self.metrics.http_latency.labels(label, method)
                self._latencies[(label, method)] = latency
            latency.observe(time.perf_counter() - started)
