"""Spans of the writes and of Omneo's webhooks, into the SDK's in-memory
exporter: the caller's trace continued, safe attributes only."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.testclient import TestClient

from gateway import tracing
from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import AUTH
from tests.tracing_guard import leaks_in_spans

TRACE_ID = secrets.token_hex(16)
PARENT_ID = secrets.token_hex(8)
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
# What must never be in a span: every value of this profile.
PROFILE = {
    "external_id": "jane.doe@example.com",
    "email": "Jane.Doe@Example.com",
    "phone": "+61 412 345 678",
    "first_name": "Janet",
    "last_name": "Doerington",
    "attributes": {"tier": "platinum-secret-tier"},
}
SECRET = "whsec-tracing-test"


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def no_profile_values(exporter: InMemorySpanExporter) -> None:
    """Beyond the guard's patterns: no value of the profile at all."""
    values = {str(v).lower() for v in PROFILE.values() if isinstance(v, str)}
    values |= {"platinum-secret-tier", "61412345678", "412 345 678"}
    for span in exporter.get_finished_spans():
        for value in (span.attributes or {}).values():
            text = str(value).lower()
            assert not any(v in text for v in values), (span.name, value)


def test_a_write_with_a_traceparent_continues_the_callers_trace(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    answer = client.post(
        "/v1/profiles",
        json=PROFILE,
        headers={**AUTH, "traceparent": TRACEPARENT, "tracestate": "vendor=abc"},
    )
    assert answer.status_code == 202
    found = by_name(spans)
    assert set(found) == {"POST /v1/profiles", "gateway.validate", "store.accept"}
    write = found["POST /v1/profiles"]
    assert write.kind is SpanKind.SERVER
    assert f"{write.context.trace_id:032x}" == TRACE_ID
    assert write.parent is not None and f"{write.parent.span_id:016x}" == PARENT_ID
    assert write.parent.is_remote
    assert write.context.trace_state.get("vendor") == "abc"
    assert write.status.status_code is StatusCode.UNSET
    assert dict(write.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/v1/profiles",
        "http.response.status_code": 202,
        "gateway.app": "crm",
        "gateway.outcome": "accepted",
        "gateway.request_id": answer.json()["request_id"],
        "gateway.profiles": 1,
        "gateway.targets": ("ocamba", "omneo", "import_batch"),
        "gateway.lane": "realtime",
        "gateway.replayed": False,
    }
    for name in ("gateway.validate", "store.accept"):
        child = found[name]
        assert child.context.trace_id == write.context.trace_id
        assert child.parent is not None and child.parent.span_id == write.context.span_id
    assert dict(found["gateway.validate"].attributes or {}) == {
        "gateway.outcome": "valid",
        "gateway.profiles": 1,
    }
    assert dict(found["store.accept"].attributes or {}) == {
        "gateway.profiles": 1,
        "gateway.request_id": answer.json()["request_id"],
        "gateway.replayed": False,
    }
    no_profile_values(spans)


def test_a_write_without_a_traceparent_starts_a_trace(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    body = {"profiles": [PROFILE, {**PROFILE, "external_id": "b-2"}], "targets": ["omneo"]}
    answer = client.post("/v1/profiles/batch", json=body, headers=AUTH)
    assert answer.status_code == 202
    write = by_name(spans)["POST /v1/profiles/batch"]
    assert write.parent is None
    assert f"{write.context.trace_id:032x}" != TRACE_ID
    assert (write.attributes or {})["gateway.profiles"] == 2
    assert (write.attributes or {})["gateway.targets"] == ("omneo",)
    no_profile_values(spans)


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-" + "0" * 32 + "-" + PARENT_ID + "-01",  # an invalid (all-zero) trace id
        f"00-{TRACE_ID}-{PARENT_ID}",  # no flags
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # upper case
        "jane.doe@example.com",
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(
    client: TestClient, spans: InMemorySpanExporter, traceparent: str
) -> None:
    headers = {**AUTH, "traceparent": traceparent}
    assert client.post("/v1/profiles", json=PROFILE, headers=headers).status_code == 202
    write = by_name(spans)["POST /v1/profiles"]
    assert write.parent is None
    assert f"{write.context.trace_id:032x}" != TRACE_ID.lower()


def test_a_caller_that_does_not_sample_gets_no_spans(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    headers = {**AUTH, "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}
    assert client.post("/v1/profiles", json=PROFILE, headers=headers).status_code == 202
    assert spans.get_finished_spans() == ()


def test_a_replay_is_a_span_of_the_first_writes_id(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    headers = {**AUTH, "Idempotency-Key": "k-1"}
    first = client.post("/v1/profiles", json=PROFILE, headers=headers).json()["request_id"]
    assert client.post("/v1/profiles", json=PROFILE, headers=headers).status_code == 202
    writes = [s for s in spans.get_finished_spans() if s.name == "POST /v1/profiles"]
    assert [(s.attributes or {})["gateway.outcome"] for s in writes] == ["accepted", "replayed"]
    assert [(s.attributes or {})["gateway.request_id"] for s in writes] == [first, first]


def test_an_invalid_body_is_an_answer_not_a_failed_span(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    bad = {**PROFILE, "email": "jane.doe@@example.com", "phone": "+61 4"}
    answer = client.post("/v1/profiles", json=bad, headers={**AUTH, "traceparent": TRACEPARENT})
    assert answer.status_code == 422
    found = by_name(spans)
    assert set(found) == {"POST /v1/profiles", "gateway.validate"}  # nothing stored
    write, validate = found["POST /v1/profiles"], found["gateway.validate"]
    assert (write.attributes or {})["gateway.outcome"] == "invalid"
    assert (write.attributes or {})["http.response.status_code"] == 422
    assert write.status.status_code is StatusCode.UNSET  # a 4xx is the caller's
    assert (validate.attributes or {})["gateway.outcome"] == "invalid"
    assert int((validate.attributes or {})["gateway.errors"]) >= 1  # type: ignore[arg-type]
    assert all(not span.events for span in found.values())
    no_profile_values(spans)


def test_a_refused_token_is_a_span_without_an_app(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    bearer = {"Authorization": "Bearer wrong-token-0123456789abcdef0123456789"}
    assert client.post("/v1/profiles", json=PROFILE, headers=bearer).status_code == 401
    write = by_name(spans)["POST /v1/profiles"]
    assert "gateway.app" not in (write.attributes or {})
    assert (write.attributes or {})["gateway.outcome"] == "unauthorized"


def test_a_store_failure_marks_the_spans_failed_with_the_error_type_only(
    client: TestClient, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.store.base import StoreError

    store = client.app.state.ctx.store  # type: ignore[attr-defined]

    async def broken(new: object) -> object:
        raise StoreError("could not write jane.doe@example.com")

    monkeypatch.setattr(store, "accept", broken)
    assert client.post("/v1/profiles", json=PROFILE, headers=AUTH).status_code == 503
    found = by_name(spans)
    accept, write = found["store.accept"], found["POST /v1/profiles"]
    assert accept.status.status_code is StatusCode.ERROR
    assert accept.status.description is None
    assert (accept.attributes or {})["error.type"] == "StoreError"
    assert write.status.status_code is StatusCode.ERROR
    assert (write.attributes or {})["error.type"] == "503"
    assert all(not span.events for span in found.values())


def _webhook(client: TestClient, body: bytes, event: str = "profile.updated") -> int:
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Omneo-Hmac-SHA256": signature, "Content-Type": "application/json"}
    answer = client.post(f"/v1/webhooks/omneo/{event}", content=body, headers=headers)
    return int(answer.status_code)


def test_an_omneo_webhook_is_a_span_with_its_event_and_result(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    settings.omneo_webhook_secret = SECRET
    body = b'{"id": 1001, "email": "Jane@Example.com", "updated_at": "2026-11-24T10:00:00Z"}'
    with TestClient(create_app(settings)) as client:
        header = settings.omneo_webhook_signature_header
        assert header.lower() == "x-omneo-hmac-sha256", header
        assert _webhook(client, body) == 200
        assert _webhook(client, body) == 200  # the same again: a duplicate
        assert _webhook(client, b"[1, 2]") == 400
        assert _webhook(client, body, "profile.deleted") == 404
        bad = {"X-Omneo-Hmac-SHA256": "00", "Content-Type": "application/json"}
        url = "/v1/webhooks/omneo/profile.created"
        assert client.post(url, content=body, headers=bad).status_code == 401
    hooks = [s for s in spans.get_finished_spans() if s.name == "omneo.webhook"]
    assert [
        (
            (s.attributes or {})["gateway.webhook.event"],
            (s.attributes or {})["gateway.webhook.result"],
            (s.attributes or {})["http.response.status_code"],
        )
        for s in hooks
    ] == [
        ("profile.updated", "stored", 200),
        ("profile.updated", "duplicate", 200),
        ("profile.updated", "invalid", 400),
        ("unknown", "unknown_event", 404),
        ("profile.created", "bad_signature", 401),
    ]
    assert all(s.kind is SpanKind.SERVER for s in hooks)
    assert all(s.status.status_code is StatusCode.UNSET for s in hooks)
    saves = [s for s in spans.get_finished_spans() if s.name == "store.save_webhook"]
    assert len(saves) == 3
    assert all(s.parent is not None for s in saves)


def test_a_stored_traceparent_is_the_parent_or_a_link_of_a_later_span(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span("caller") as caller:
        assert caller.recording
        stored = tracing.current_traceparent()
    assert stored is not None and tracing.TRACEPARENT.fullmatch(stored)
    # Minutes later, elsewhere: a delivery joins the caller's trace, or links to it.
    with tracing.span("delivery", {"gateway.backend": "omneo"}, kind="client", parent=stored):
        headers: dict[str, str] = {}
        tracing.inject(headers)
    with tracing.span("batch", links=[stored, "not-a-traceparent"]):
        pass
    found = by_name(spans)
    caller_ctx = found["caller"].context
    assert stored[:-3] == f"00-{caller_ctx.trace_id:032x}-{caller_ctx.span_id:016x}"
    assert int(stored[-2:], 16) & 1  # sampled
    delivery = found["delivery"]
    assert delivery.context.trace_id == caller_ctx.trace_id
    assert delivery.parent is not None and delivery.parent.span_id == caller_ctx.span_id
    assert headers["traceparent"].split("-")[1:3] == [
        f"{caller_ctx.trace_id:032x}",
        f"{delivery.context.span_id:016x}",
    ]
    batch = found["batch"]
    assert batch.context.trace_id != caller_ctx.trace_id
    assert [link.context.span_id for link in batch.links] == [caller_ctx.span_id]


def test_the_guard_finds_personal_data_in_a_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("leaky") as span:
        span.set_attribute("who", "jane.doe@example.com")
        span.set_attribute("phones", ["+61412345678"])
        span.add_event("auth", {"header": "Bearer abc.def"})
    found = leaks_in_spans(exporter.get_finished_spans())
    assert [line.split(": ", 2)[2].split(":")[0] for line in found] == [
        "email",
        "phone",
        "bearer credential",
    ]
