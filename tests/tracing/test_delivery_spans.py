"""`gateway.deliver` and `backend.send`: a write's delivery, sent later by a
dispatcher, in the caller's trace or linked to it (the traceparent stored with
the write), and each HTTP call to the backend a client span under it."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway import tracing
from gateway.backends.base import Item, Outcome
from gateway.backends.transport.pacing import unlimited_pacer
from gateway.backends.transport.sender import HttpSender
from gateway.config import Settings
from gateway.dispatch.dispatcher import Dispatcher
from gateway.metrics import Metrics
from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import NewRequest, Store

pytestmark = pytest.mark.anyio

BOUND = 10.0  # real seconds a test waits for the dispatcher before it fails


class Caller:
    """A caller's span, as the traceparent the gateway stored for its write."""

    def __init__(self) -> None:
        self.trace_id = secrets.token_hex(16)
        self.span_id = secrets.token_hex(8)
        self.traceparent = f"00-{self.trace_id}-{self.span_id}-01"


class SendingAdapter:
    """Omneo's shape: one HTTP call per batch, through the real sender."""

    name: Backend = "omneo"
    batch_size = 50

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.calls: list[list[str]] = []
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self.answer))
        self.sender = HttpSender(
            "omneo", self.http, "http://omneo.test/api", pacer=unlimited_pacer(4), timeout=5
        )

    def answer(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(self.status, json={"message": "jane.doe@example.com is taken"})

    async def deliver(self, items: Sequence[Item]) -> list[Outcome]:
        self.calls.append([i.profile.external_id for i in items])
        await self.sender.post("batch", "/v1/batch?token=secret", json={"n": len(items)})
        return [Outcome(i.delivery_id, "accepted", sent_at=time.time()) for i in items]


async def accept(store: Store, request_id: str, *external_ids: str, tp: str | None) -> None:
    await store.accept(
        NewRequest(
            request_id=request_id,
            app="crm",
            targets=["omneo"],
            profiles=[NormalizedProfile(external_id=i) for i in external_ids],
            received_at=time.time(),
            traceparent=tp,
        )
    )


async def deliver_once(store: Store, adapter: SendingAdapter, *, started_in: str = "") -> None:
    """Starts a dispatcher, waits for its first call to the backend, stops it.
    `started_in`: the name of a span current when its workers start (their
    tasks inherit it), as when a traced process starts the gateway."""
    settings = Settings(batch_linger=0.0, workers_per_backend=1, retry_base=60, retry_cap=60)
    d = Dispatcher(store, {"omneo": adapter}, settings, Metrics(), poll_interval=0.05)
    if started_in:
        with tracing.span(started_in):
            await d.start()
    else:
        await d.start()
    try:
        deadline = time.monotonic() + BOUND
        while not adapter.calls:
            assert time.monotonic() < deadline, "the dispatcher sent nothing"
            await asyncio.sleep(0.01)
        await asyncio.wait_for(d.idle(), BOUND)
    finally:
        await d.stop()
        await adapter.http.aclose()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def linked(span: ReadableSpan) -> list[tuple[str, str]]:
    return [(f"{x.context.trace_id:032x}", f"{x.context.span_id:016x}") for x in span.links]


async def test_a_batch_of_one_callers_writes_is_delivered_in_its_trace(
    store: Store, spans: InMemorySpanExporter
) -> None:
    caller = Caller()
    await accept(store, "r-1", "a", "b", tp=caller.traceparent)
    adapter = SendingAdapter()
    await deliver_once(store, adapter)
    assert adapter.calls == [["a", "b"]]

    [deliver] = named(spans, "gateway.deliver")
    assert deliver.kind is SpanKind.INTERNAL
    assert hex_ids(deliver)[0] == caller.trace_id
    assert deliver.parent is not None and f"{deliver.parent.span_id:016x}" == caller.span_id
    assert linked(deliver) == [(caller.trace_id, caller.span_id)]
    assert dict(deliver.attributes or {}) == {
        "gateway.backend": "omneo",
        "gateway.deliveries": 2,
        "gateway.lane": "realtime",
        "gateway.attempt": 1,
        "gateway.carried": 0,
        "gateway.outcome.accepted": 2,
    }
    assert deliver.status.status_code is StatusCode.UNSET

    [send] = named(spans, "backend.send")
    assert send.kind is SpanKind.CLIENT
    assert send.parent is not None and send.parent.span_id == deliver.context.span_id
    assert send.context.trace_id == deliver.context.trace_id
    assert dict(send.attributes or {}) == {
        "gateway.backend": "omneo",
        "gateway.endpoint": "batch",
        "http.response.status_code": 200,
    }


async def test_a_batch_of_several_traces_starts_its_own_linked_to_each(
    store: Store, spans: InMemorySpanExporter
) -> None:
    first, second, third = Caller(), Caller(), Caller()
    await accept(store, "r-1", "a", tp=first.traceparent)
    await accept(store, "r-2", "b", tp=second.traceparent)
    await accept(store, "r-3", "c", tp=None)  # accepted while tracing was off
    await accept(store, "r-4", "d", tp=first.traceparent)
    # A later write of `a`, merged into a's delivery: its trace is linked too.
    await accept(store, "r-5", "a", tp=third.traceparent)
    adapter = SendingAdapter()
    await deliver_once(store, adapter, started_in="startup")
    assert sorted(adapter.calls[0]) == ["a", "b", "c", "d"]

    [deliver] = named(spans, "gateway.deliver")
    assert deliver.parent is None  # a root: not the span the workers started in
    assert hex_ids(deliver)[0] not in {first.trace_id, second.trace_id, third.trace_id}
    assert sorted(linked(deliver)) == sorted(
        (c.trace_id, c.span_id) for c in (first, second, third)
    )
    attributes = dict(deliver.attributes or {})
    assert attributes["gateway.deliveries"] == 4
    assert attributes["gateway.carried"] == 1
    [send] = named(spans, "backend.send")
    assert send.parent is not None and send.parent.span_id == deliver.context.span_id


async def test_a_failed_call_is_a_failed_span_naming_the_status_only(
    store: Store, spans: InMemorySpanExporter
) -> None:
    caller = Caller()
    await accept(store, "r-1", "a", tp=caller.traceparent)
    adapter = SendingAdapter(status=503)
    await deliver_once(store, adapter)

    [send] = named(spans, "backend.send")
    assert send.status.status_code is StatusCode.ERROR
    assert send.status.description is None
    assert dict(send.attributes or {}) == {
        "gateway.backend": "omneo",
        "gateway.endpoint": "batch",
        "http.response.status_code": 503,
        "error.type": "503",
    }
    [deliver] = named(spans, "gateway.deliver")
    assert hex_ids(deliver)[0] == caller.trace_id
    assert deliver.status.status_code is StatusCode.ERROR
    assert (deliver.attributes or {})["error.type"] == "TransientError"
    assert all(not s.events for s in spans.get_finished_spans())
    view = await store.get_profile("a")
    assert view is not None and view.backends["omneo"].state == "retrying"
