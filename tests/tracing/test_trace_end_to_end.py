"""One caller's trace from the write to each backend and back: the gateway on
a real socket, the three simulators, the real adapters, and Omneo's signed
webhook confirming the delivery, every span into the in-memory exporter."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.e2e.flow import all_in, running_flow
from tests.tracing.test_spans import PROFILE, no_profile_values

pytestmark = pytest.mark.anyio

DONE = {"ocamba": "accepted", "omneo": "confirmed", "import_batch": "confirmed"}


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_the_callers_trace_holds_each_delivery_and_the_confirmation(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    async with running_flow(tmp_path) as flow:
        answer = await flow.http.post(
            "/v1/profiles",
            json=PROFILE,
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["request_id"]
        states = await flow.wait_for(request_id, all_in("accepted", "confirmed"))
        assert {backend: state for (_, backend), state in states.items()} == DONE
        # The confirmation's span ends once its transaction has committed,
        # just after the state the status API shows.
        deadline = time.monotonic() + 10
        while not named(spans, "omneo.confirm"):
            assert time.monotonic() < deadline, "no omneo.confirm span"
            await asyncio.sleep(0.02)

    [accept] = named(spans, "store.accept")
    assert f"{accept.context.trace_id:032x}" == trace_id
    delivers = named(spans, "gateway.deliver")
    assert sorted(str((d.attributes or {})["gateway.backend"]) for d in delivers) == sorted(DONE)
    for deliver in delivers:
        # Sent later, by the dispatcher: a child of the commit that stored it.
        assert deliver.context.trace_id == accept.context.trace_id
        assert deliver.parent is not None and deliver.parent.span_id == accept.context.span_id
        assert (deliver.attributes or {})["gateway.deliveries"] == 1
        sends = [
            s
            for s in named(spans, "backend.send")
            if s.parent is not None and s.parent.span_id == deliver.context.span_id
        ]
        assert sends, deliver.attributes
        for send in sends:
            assert send.kind is SpanKind.CLIENT
            attributes = dict(send.attributes or {})
            assert attributes["gateway.backend"] == (deliver.attributes or {})["gateway.backend"]
            assert 200 <= int(attributes["http.response.status_code"]) < 300  # type: ignore[arg-type]
            assert set(attributes) == {
                "gateway.backend",
                "gateway.endpoint",
                "http.response.status_code",
            }
    outcomes = {
        (d.attributes or {})["gateway.backend"]: {
            k: v for k, v in (d.attributes or {}).items() if k.startswith("gateway.outcome.")
        }
        for d in delivers
    }
    assert outcomes == {
        "ocamba": {"gateway.outcome.accepted": 1},
        "omneo": {"gateway.outcome.accepted": 1},
        "import_batch": {"gateway.outcome.confirmed": 1},
    }

    confirms = named(spans, "omneo.confirm")
    applied = [c for c in confirms if (c.attributes or {})["gateway.webhook.result"] == "applied"]
    [confirm] = applied
    assert confirm.context.trace_id == accept.context.trace_id
    assert confirm.parent is not None and confirm.parent.span_id == accept.context.span_id
    assert dict(confirm.attributes or {}) == {
        "gateway.webhook.event": "profile.created",
        "gateway.webhook.result": "applied",
        "gateway.confirmed": 1,
    }
    no_profile_values(spans)
