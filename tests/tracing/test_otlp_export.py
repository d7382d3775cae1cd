"""`gateway serve` exports its spans over OTLP/HTTP to a receiver on 127.0.0.1,
which decodes each ExportTraceServiceRequest with opentelemetry-proto's classes:
the write's, and those of its delivery to the import_batch simulator."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.simulators.import_batch import API_ROOT as IMPORT_BATCH_API_ROOT
from gateway.simulators.import_batch import create_import_batch_app
from tests.servers import free_port, serve
from tests.tokens import api_token, entry
from tests.tracing_guard import leaks_in_values

TOKEN = api_token("otlp")


def _value(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return None if kind is None else getattr(value, kind)


class Receiver:
    """What an OTLP/HTTP collector does with /v1/traces, decoded and kept."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, object], Span]] = []  # (resource attributes, span)
        self.content_types: set[str] = set()
        self.lock = threading.Lock()

    async def traces(self, request: Request) -> Response:
        self.content_types.add(request.headers.get("content-type", ""))
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.body())
        with self.lock:
            for resource_spans in export.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans += [(resource, span) for span in scope_spans.spans]
        return Response(
            ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )

    def named(self, name: str) -> list[tuple[dict[str, object], Span]]:
        with self.lock:
            return [(r, s) for r, s in self.spans if s.name == name]


def test_gateway_serve_exports_the_write_and_its_delivery_in_the_callers_trace(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    otlp = Starlette(routes=[Route("/v1/traces", receiver.traces, methods=["POST"])])
    port = free_port()
    log = tmp_path / "gateway.log"
    # A backend to deliver to, so the delivery's span is exported too.
    import_batch = create_import_batch_app(token="ib-token", db_id=1)
    with serve(otlp) as collector, serve(import_batch) as backend:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            "PYTHONUNBUFFERED": "1",
            "GATEWAY_API_TOKENS": entry("crm", TOKEN),
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
            "GATEWAY_IMPORT_BATCH_URL": backend + IMPORT_BATCH_API_ROOT,
            "GATEWAY_IMPORT_BATCH_TOKEN": "ib-token",
            "GATEWAY_IMPORT_BATCH_DB_ID": "1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_SHUTDOWN_DELAY": "0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log.read_text(errors="replace")
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.05)
            trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
            answer = httpx.post(
                f"{base}/v1/profiles",
                json={"external_id": "jane@example.com", "email": "jane@example.com"},
                headers={
                    "Authorization": f"Bearer {TOKEN}",
                    "traceparent": f"00-{trace_id}-{parent_id}-01",
                },
                timeout=10,
            )
            assert answer.status_code == 202, answer.text
            deadline = time.monotonic() + 20
            while not all(
                receiver.named(name)
                for name in ("POST /v1/profiles", "store.accept", "gateway.deliver", "backend.send")
            ):
                assert time.monotonic() < deadline, (receiver.spans, log.read_text())
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    [(resource, write)] = receiver.named("POST /v1/profiles")
    assert write.trace_id.hex() == trace_id
    assert write.parent_span_id.hex() == parent_id
    assert write.kind == Span.SpanKind.SPAN_KIND_SERVER
    attributes = {a.key: _value(a.value) for a in write.attributes}
    assert attributes["gateway.request_id"] == answer.json()["request_id"]
    assert attributes["gateway.outcome"] == "accepted"
    assert attributes["http.response.status_code"] == 202
    assert resource["service.name"] == "profile-gateway"
    [(_, accept)] = receiver.named("store.accept")
    assert accept.trace_id.hex() == trace_id
    assert accept.parent_span_id == write.span_id
    # Delivered by the dispatcher after the answer: still the caller's trace.
    [(_, deliver)] = receiver.named("gateway.deliver")
    assert deliver.trace_id.hex() == trace_id
    assert deliver.parent_span_id == accept.span_id
    assert [link.span_id for link in deliver.links] == [accept.span_id]
    attributes = {a.key: _value(a.value) for a in deliver.attributes}
    assert attributes["gateway.backend"] == "import_batch"
    assert attributes["gateway.deliveries"] == 1
    [(_, send)] = receiver.named("backend.send")
    assert send.parent_span_id == deliver.span_id
    assert send.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert {a.key: _value(a.value) for a in send.attributes} == {
        "gateway.backend": "import_batch",
        "gateway.endpoint": "import",
        "http.response.status_code": 200,
    }
    assert receiver.content_types == {"application/x-protobuf"}
    leaks = [
        leak
        for _, span in receiver.spans
        for leak in leaks_in_values(
            f"span {span.name!r}",
            [("name", span.name), ("status", span.status.message)]
            + [(a.key, _value(a.value)) for a in span.attributes]
            + [(a.key, _value(a.value)) for e in span.events for a in e.attributes],
        )
    ]
    assert leaks == []
    assert "jane" not in str([s for _, s in receiver.spans])
