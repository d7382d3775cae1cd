"""The trace context stored with a write, on both engines: it survives the
store, a claim by another replica (another Store on the same database), the
merge of a person's writes, and the webhook that confirms the delivery."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient

from gateway import tracing
from gateway.clock import FakeClock
from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import DeliveryResult, NewRequest, Store, WebhookEvent
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.conftest import AUTH

pytestmark = pytest.mark.anyio
Rows = Callable[[str], list[tuple[Any, ...]]]


def traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def open_store(url: str) -> Store:
    return SQLiteStore.from_url(url) if url.startswith("sqlite:///") else PostgresStore(url)


@pytest.fixture
def clock(store: Store) -> FakeClock:
    """One clock for both stores, stepped by the test."""
    clock = FakeClock()
    store.clock = clock
    return clock


@pytest.fixture
async def replica(store_url: str, store: Store, clock: FakeClock) -> AsyncIterator[Store]:
    """Another process's store on the same database as `store`."""
    other = open_store(store_url)
    other.clock = clock
    await other.open()
    yield other
    await other.close()


async def accept(
    store: Store,
    request_id: str,
    *external_ids: str,
    tp: str | None,
    targets: tuple[Backend, ...] = ("omneo",),
) -> None:
    await store.accept(
        NewRequest(
            request_id=request_id,
            app="crm",
            targets=list(targets),
            profiles=[NormalizedProfile(external_id=i) for i in external_ids],
            received_at=store.clock.now(),
            traceparent=tp,
        )
    )


async def test_another_replica_claims_the_write_with_its_traceparent(
    store: Store, replica: Store
) -> None:
    first, second = traceparent(), traceparent()
    await accept(store, "r-1", "a", "b", tp=first)
    await accept(store, "r-2", "c", tp=second)
    await accept(store, "r-3", "d", tp=None)  # tracing off when it was accepted
    claims = await replica.claim("omneo", 10, "replica-2", 30)
    assert {c.external_id: c.traceparent for c in claims} == {
        "a": first,
        "b": first,
        "c": second,
        "d": None,
    }
    assert all(c.carried_traceparents == () for c in claims)


async def test_a_merged_write_brings_its_traceparent_to_the_carrier(
    store: Store, replica: Store, clock: FakeClock
) -> None:
    first, second, third = traceparent(), traceparent(), traceparent()
    await accept(store, "r-1", "a", tp=first)
    await accept(store, "r-2", "a", tp=second)
    await accept(store, "r-3", "a", tp=third)
    await accept(store, "r-4", "a", tp=second)  # the same trace again: once
    [claim] = await replica.claim("omneo", 10, "replica-2", 30)
    assert len(claim.carries) == 3
    assert claim.traceparent == first
    assert claim.carried_traceparents == (second, third)
    # Claimed again after the lease ran out (the worker died): still carried.
    clock.advance(60)
    [again] = await store.claim("omneo", 10, "replica-1", 30)
    assert again.delivery_id == claim.delivery_id
    assert (again.traceparent, again.carried_traceparents) == (first, (second, third))


async def test_the_confirmation_of_a_write_names_its_traceparent(
    store: Store, replica: Store, clock: FakeClock
) -> None:
    tp = traceparent()
    await accept(store, "r-1", "a", tp=tp)
    [claim] = await replica.claim("omneo", 10, "replica-2", 30)
    sent_at = clock.now()
    clock.advance(1)  # the webhook arrives after the call was sent
    result = DeliveryResult(claim.delivery_id, "accepted", match_key="a-key", sent_at=sent_at)
    assert await replica.record("replica-2", [result]) == 1
    body = b'{"id": 7}'
    await store.save_webhook(
        WebhookEvent(
            source="omneo",
            event="profile.updated",
            body_hash=hashlib.sha256(body).hexdigest(),
            body=body,
            received_at=store.clock.now(),
            backend_id="7",
            match_key="a-key",
        )
    )
    [applied] = await store.apply_webhooks("omneo")
    assert applied.result == "applied"
    assert [(c.external_id, c.traceparent) for c in applied.confirmations] == [("a", tp)]


def test_the_api_stores_the_commit_spans_traceparent(
    client: TestClient, spans: InMemorySpanExporter, rows: Rows
) -> None:
    caller = traceparent()
    answer = client.post(
        "/v1/profiles",
        json={"external_id": "x-1"},
        headers={**AUTH, "traceparent": caller},
    )
    assert answer.status_code == 202
    [accept_span] = [s for s in spans.get_finished_spans() if s.name == "store.accept"]
    ctx = accept_span.context
    stored = rows(f"SELECT traceparent FROM requests WHERE id = '{answer.json()['request_id']}'")
    assert stored == [(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01",)]
    assert caller.split("-")[1] == f"{ctx.trace_id:032x}"


def test_without_tracing_nothing_is_stored(client: TestClient, rows: Rows) -> None:
    assert not tracing.enabled()
    answer = client.post("/v1/profiles", json={"external_id": "x-1"}, headers=AUTH)
    assert answer.status_code == 202
    assert rows("SELECT traceparent FROM requests") == [(None,)]


def test_a_malformed_traceparent_is_not_stored(
    client: TestClient,
    spans: InMemorySpanExporter,
    rows: Rows,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The SDK makes well-formed ones only; a propagator of another version might not.
    monkeypatch.setattr(tracing, "current_traceparent", lambda: "01-abc-def-01")
    answer = client.post("/v1/profiles", json={"external_id": "x-1"}, headers=AUTH)
    assert answer.status_code == 202
    assert rows("SELECT traceparent FROM requests") == [(None,)]
