"""The alert rules' logic - thresholds, windows and `for` durations - with
`promtool test rules` on synthetic series, against the rules exactly as the
chart renders them with its default values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.deploy import chart
from tests.deploy.stack import promtool

JOB = f"{chart.RELEASE}-profile-gateway"
SCRAPE = f'job="{JOB}", namespace="{chart.NAMESPACE}", instance="10.0.0.7:8080"'


def series(metric: str, labels: str, values: str) -> dict[str, str]:
    extra = f", {labels}" if labels else ""
    return {"series": f"{metric}{{{SCRAPE}{extra}}}", "values": values}


def silent(name: str, at: str) -> dict[str, Any]:
    """`name` is neither firing at `at` (pending does not count)."""
    return {"eval_time": at, "alertname": name, "exp_alerts": []}


def fires(
    name: str, at: str, labels: dict[str, str], summary: str, description: str
) -> dict[str, Any]:
    """`name` fires at `at` exactly once, with these labels and annotations."""
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [
            {
                "exp_labels": {"job": JOB, "namespace": chart.NAMESPACE, **labels},
                "exp_annotations": {"summary": summary, "description": description},
            }
        ],
    }


SEEN_UNCONFIRMED = (
    "of the Omneo deliveries accepted in the last hour have no confirming webhook "
    "(threshold 0.2). Check that the Omneo webhooks exist, point at this gateway, share "
    "GATEWAY_OMNEO_WEBHOOK_SECRET, and use another namespace than GATEWAY_OMNEO_TOKEN."
)


TESTS: list[dict[str, Any]] = [
    {
        "name": "dead letters: fire after 5m of new ones, clear 15m after the last",
        "interval": "1m",
        "input_series": [
            # 3 dead letters between minutes 1 and 3, then none.
            series(
                "gateway_deliveries_total",
                'backend="import_batch", outcome="dead"',
                "0 1 2 3x30",
            ),
            series("gateway_deliveries_total", 'backend="omneo", outcome="accepted"', "0+10x33"),
        ],
        "alert_rule_test": [
            silent("GatewayDeadLettersGrowing", "3m"),  # pending, `for` not reached
            fires(
                "GatewayDeadLettersGrowing",
                "8m",
                {"severity": "warning", "backend": "import_batch", "outcome": "dead"},
                "Dead letters growing on import_batch",
                "3 dead deliveries to import_batch in the last 15m. List them with GET "
                "/v1/dead-letters?backend=import_batch&state=dead and replay once the cause "
                "is fixed.",
            ),
            silent("GatewayDeadLettersGrowing", "25m"),  # the 15m window has no new one
        ],
    },
    {
        "name": "oldest pending: over 600s for 5m",
        "interval": "1m",
        "input_series": [
            series("gateway_oldest_pending_seconds", 'backend="ocamba"', "0 700x20"),
            series("gateway_oldest_pending_seconds", 'backend="omneo"', "590x20"),
        ],
        "alert_rule_test": [
            silent("GatewayOldestPendingTooOld", "4m"),
            fires(
                "GatewayOldestPendingTooOld",
                "8m",
                {"severity": "warning", "backend": "ocamba"},
                "Deliveries to ocamba are waiting too long",
                "The oldest delivery waiting for ocamba is 11m 40s old (threshold 600s): the "
                "backend is down, slow or rate limiting, or the dispatcher is not running.",
            ),
        ],
    },
    {
        "name": "backend error ratio: a third of import_batch calls fail, 1% of Omneo's",
        "interval": "1m",
        "input_series": [
            series(
                "gateway_backend_call_seconds_count",
                'backend="import_batch", endpoint="import", status="200"',
                "0+20x40",
            ),
            series(
                "gateway_backend_call_seconds_count",
                'backend="import_batch", endpoint="import", status="503"',
                "0+5x40",
            ),
            series(
                "gateway_backend_call_seconds_count",
                'backend="import_batch", endpoint="import", status="timeout"',
                "0+5x40",
            ),
            series(
                "gateway_backend_call_seconds_count",
                'backend="omneo", endpoint="batch", status="202"',
                "0+99x40",
            ),
            series(
                "gateway_backend_call_seconds_count",
                'backend="omneo", endpoint="batch", status="500"',
                "0+1x40",
            ),
        ],
        "alert_rule_test": [
            silent("GatewayBackendErrorRatioHigh", "8m"),  # for: 10m
            fires(
                "GatewayBackendErrorRatioHigh",
                "20m",
                {"severity": "warning", "backend": "import_batch"},
                "Calls to import_batch are failing",
                "33.33% of the calls to import_batch over 10 minutes failed (threshold 0.1).",
            ),
        ],
    },
    {
        "name": "Omneo unconfirmed share: half the accepted deliveries unconfirmed",
        "interval": "1m",
        "input_series": [
            series("gateway_deliveries_total", 'backend="omneo", outcome="accepted"', "0+10x60"),
            series("gateway_deliveries_total", 'backend="omneo", outcome="confirmed"', "0+5x60"),
        ],
        "alert_rule_test": [
            silent("GatewayOmneoUnconfirmedShareHigh", "10m"),  # for: 15m
            fires(
                "GatewayOmneoUnconfirmedShareHigh",
                "30m",
                {"severity": "warning"},
                "Omneo webhooks are not confirming deliveries",
                f"50% {SEEN_UNCONFIRMED}",
            ),
        ],
    },
    {
        "name": "Omneo confirming everything: no alert",
        "interval": "1m",
        "input_series": [
            series("gateway_deliveries_total", 'backend="omneo", outcome="accepted"', "0+10x60"),
            series("gateway_deliveries_total", 'backend="omneo", outcome="confirmed"', "0+10x60"),
        ],
        "alert_rule_test": [silent("GatewayOmneoUnconfirmedShareHigh", "50m")],
    },
    {
        "name": "circuit open: import_batch down for 8m, Omneo 2m, then idle half-open",
        "interval": "1m",
        # 2 open, 1 half-open: a probe caught at scrape time does not restart the
        # `for`. import_batch's probes keep failing (a reopening every minute);
        # Omneo's circuit opened once, then waited half-open with nothing to send.
        "input_series": [
            series("gateway_circuit_state", 'backend="import_batch"', "0 2 2 1 2 2 2 2 2 0x10"),
            series(
                "gateway_circuit_transitions_total",
                'backend="import_batch", to="open"',
                "0 1 2 3 4 5 6 7 8 8x10",
            ),
            series("gateway_circuit_state", 'backend="omneo"', "0 2 1x20"),
            series("gateway_circuit_transitions_total", 'backend="omneo", to="open"', "0 1x20"),
        ],
        "alert_rule_test": [
            silent("GatewayCircuitOpen", "4m"),  # for: 5m
            fires(
                "GatewayCircuitOpen",
                "6m",
                {"severity": "warning", "backend": "import_batch"},
                "The circuit to import_batch is open",
                "The gateway has judged import_batch down (connection errors, timeouts or 5xx) "
                "and has sent it only probe batches for over 5m; its deliveries wait in the "
                "queue and are sent when a probe succeeds.",
            ),
            silent("GatewayCircuitOpen", "10m"),  # closed again; Omneo never fired
        ],
    },
    {
        "name": "a pod stops answering scrapes",
        "interval": "1m",
        "input_series": [series("up", "", "1 1 0x10")],
        "alert_rule_test": [
            silent("GatewayDown", "3m"),  # for: 2m
            fires(
                "GatewayDown",
                "6m",
                {"severity": "critical", "instance": "10.0.0.7:8080"},
                "A profile gateway pod does not answer scrapes",
                f"Prometheus cannot scrape 10.0.0.7:8080 ({JOB}).",
            ),
            silent("GatewayAbsent", "6m"),
        ],
    },
    {
        "name": "no pod scraped at all",
        "interval": "1m",
        "input_series": [{"series": 'up{job="something-else"}', "values": "1x10"}],
        "alert_rule_test": [
            silent("GatewayAbsent", "1m"),
            fires(
                "GatewayAbsent",
                "5m",
                {"severity": "critical"},
                "No profile gateway pod is scraped",
                f"Prometheus has no target for job {JOB} in namespace {chart.NAMESPACE}: the "
                "Deployment is gone or the ServiceMonitor does not match.",
            ),
        ],
    },
]


def _rules_file(tmp_path: Path, values: dict[str, Any] | None = None) -> Path:
    rule = chart.only(chart.render(values), "PrometheusRule")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule.doc["spec"]["groups"]}, sort_keys=False))
    return path


def _run(tmp_path: Path, tests: list[dict[str, Any]], values: dict[str, Any] | None = None) -> str:
    rules = _rules_file(tmp_path, values)
    spec = tmp_path / "rules_test.yml"
    spec.write_text(
        yaml.safe_dump(
            {"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests},
            sort_keys=False,
        )
    )
    result = promtool("test", "rules", str(spec))
    out = result.stdout + result.stderr
    return ("OK\n" if result.returncode == 0 else "FAILED\n") + out


def test_each_alert_fires_when_it_should_and_not_before(tmp_path: Path) -> None:
    out = _run(tmp_path, TESTS)
    assert out.startswith("OK"), out
    assert "SUCCESS" in out


def test_additional_alert_labels_reach_every_alert(tmp_path: Path) -> None:
    """additionalAlertLabels (e.g. the team to route to) are on the alert; a
    `failed` dead letter names its state in the replay hint."""
    test = {
        "name": "additional labels",
        "interval": "1m",
        "input_series": [
            series("gateway_deliveries_total", 'backend="ocamba", outcome="failed"', "0 0 4x20"),
        ],
        "alert_rule_test": [
            fires(
                "GatewayDeadLettersGrowing",
                "10m",
                {
                    "severity": "warning",
                    "team": "platform",
                    "backend": "ocamba",
                    "outcome": "failed",
                },
                "Dead letters growing on ocamba",
                "4 failed deliveries to ocamba in the last 15m. List them with GET "
                "/v1/dead-letters?backend=ocamba&state=failed and replay once the cause is fixed.",
            )
        ],
    }
    values = {"metrics": {"prometheusRule": {"additionalAlertLabels": {"team": "platform"}}}}
    out = _run(tmp_path, [test], values)
    assert out.startswith("OK"), out
    rules = chart.only(chart.render(values), "PrometheusRule").doc["spec"]["groups"][0]["rules"]
    assert all(rule["labels"]["team"] == "platform" for rule in rules)


def test_thresholds_come_from_the_values(tmp_path: Path) -> None:
    """Lowering oldestPendingSeconds to 60 makes 100 s of age fire; the
    defaults (600) stay silent on the same series."""
    test = {
        "name": "threshold from values",
        "interval": "1m",
        "input_series": [series("gateway_oldest_pending_seconds", 'backend="omneo"', "100x20")],
        "alert_rule_test": [
            fires(
                "GatewayOldestPendingTooOld",
                "10m",
                {"severity": "warning", "backend": "omneo"},
                "Deliveries to omneo are waiting too long",
                "The oldest delivery waiting for omneo is 1m 40s old (threshold 60s): the "
                "backend is down, slow or rate limiting, or the dispatcher is not running.",
            )
        ],
    }
    lowered = {"metrics": {"prometheusRule": {"thresholds": {"oldestPendingSeconds": 60}}}}
    assert _run(tmp_path, [test], lowered).startswith("OK")
    assert _run(tmp_path, [test]).startswith("FAILED")


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    """The harness can fail: expecting the dead-letter alert to fire on a quiet
    system is reported."""
    quiet = {
        "name": "quiet",
        "interval": "1m",
        "input_series": [
            series("gateway_deliveries_total", 'backend="omneo", outcome="dead"', "0x20")
        ],
        "alert_rule_test": [
            fires(
                "GatewayDeadLettersGrowing",
                "10m",
                {"severity": "warning", "backend": "omneo", "outcome": "dead"},
                "Dead letters growing on omneo",
                "0 dead deliveries to omneo in the last 15m.",
            )
        ],
    }
    out = _run(tmp_path, [quiet])
    assert out.startswith("FAILED"), out
