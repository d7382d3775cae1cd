"""Tracing is off unless the OTEL_* variables ask for it, and off costs nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway import tracing
from tests.conftest import AUTH


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "zipkin, Console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"}, False),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"}, True),
    ],
)
def test_which_variables_turn_tracing_on(env: dict[str, str], on: bool) -> None:
    assert tracing.requested(env) is on


def test_off_every_call_is_a_no_op(client: TestClient) -> None:
    assert not tracing.enabled()
    assert tracing.setup({}) is False
    with tracing.span(
        "x", {"a": 1}, headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    ) as span:
        assert span is tracing.NOOP and not span.recording
        span.set("a", 1)
        span.fail("E")
        assert tracing.current_traceparent() is None
        headers: dict[str, str] = {}
        tracing.inject(headers)
        assert headers == {}
        assert tracing.extract({"traceparent": "x"}) is None
    tracing.flush()
    assert client.post("/v1/profiles", json={"external_id": "a-1"}, headers=AUTH).status_code == 202


# Run in a fresh interpreter: this one has imported OpenTelemetry for the other tests.
NO_IMPORT = textwrap.dedent(
    """
    import os, sys
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            del os.environ[name]
    from starlette.testclient import TestClient
    from gateway import tracing
    from gateway.app import create_app
    from gateway.config import Settings
    from gateway.serving import run_server
    assert tracing.setup() is False
    settings = Settings(database_url="sqlite:///" + sys.argv[1], api_tokens="crm:" + sys.argv[2],
                        dispatcher_enabled=False)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/profiles", json={"external_id": "a-1"},
                             headers={"Authorization": "Bearer " + sys.argv[2],
                                      "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
        assert answer.status_code == 202, answer.text
    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
    assert loaded == [], loaded
    print("no opentelemetry")
    """
)


def test_off_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    from tests.tokens import api_token

    done = subprocess.run(
        [sys.executable, "-c", NO_IMPORT, str(tmp_path) + "/g.db", api_token("crm")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "no opentelemetry"


def test_requested_without_the_extra_is_a_warning_and_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_otel(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("opentelemetry"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_otel)
    assert tracing.setup({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}) is False
    assert not tracing.enabled()
    assert "tracing extra is not installed" in caplog.text


def test_setup_names_the_service_and_reads_the_sdks_variables(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    env = {"OTEL_TRACES_EXPORTER": "console,zipkin"}
    try:
        assert tracing.setup(env) is True
        assert tracing.enabled()
        assert tracing._provider is not None
        assert tracing._provider.resource.attributes["service.name"] == "profile-gateway"
        assert "does not ship: ignored" in caplog.text  # zipkin
    finally:
        tracing.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    try:
        assert tracing.setup(env) is True
        assert tracing._provider is not None
        attributes = tracing._provider.resource.attributes
        assert attributes["service.name"] == "gw-eu"
        assert attributes["deployment.environment"] == "test"
    finally:
        tracing.shutdown()
