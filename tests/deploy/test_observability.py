"""The chart's dashboard and alert rules against a real Prometheus scraping a
real gateway (see stack.py), and the checker that judges them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import chart
from tests.deploy.promql import (
    Prometheus,
    check_dashboard,
    check_expression,
    check_variable_query,
    dashboard_queries,
    substitute,
)
from tests.deploy.stack import (
    METRICS_TOKEN,
    Stack,
    Traffic,
    promtool,
    running_stack,
    scrape_config_from_service_monitor,
)

NAMESPACE = "gateway-e2e"
# Render as a test install would: scrape every second, a metrics token, and an
# oldest-pending threshold the Ocamba backlog crosses within seconds.
TEST_VALUES: dict[str, Any] = {
    "secrets": {"values": {"GATEWAY_METRICS_TOKEN": METRICS_TOKEN}},
    "metrics": {
        "serviceMonitor": {"interval": "1s", "scrapeTimeout": "1s"},
        "prometheusRule": {"thresholds": {"oldestPendingSeconds": 1}},
    },
}
EXPECTED_ALERTS = {
    "GatewayDeadLettersGrowing",  # Ocamba `failed`, import_batch `dead`
    "GatewayOldestPendingTooOld",  # the paced Ocamba backlog
    "GatewayBackendErrorRatioHigh",  # import_batch answers 5xx half the time
    "GatewayOmneoUnconfirmedShareHigh",  # half the Omneo webhooks are dropped
    "GatewayDown",  # the second target is a port nothing listens on
}
# The circuit breaker opens only on a run of failed batches: not reliably in this traffic.
ALL_ALERTS = EXPECTED_ALERTS | {"GatewayAbsent", "GatewayCircuitOpen"}


def rendered() -> list[chart.Manifest]:
    return chart.render(TEST_VALUES, namespace=NAMESPACE)


def rule_groups(manifests: list[chart.Manifest]) -> dict[str, Any]:
    """The rendered PrometheusRule's spec, as a Prometheus rule file."""
    return {"groups": chart.only(manifests, "PrometheusRule").doc["spec"]["groups"]}


def dashboard() -> dict[str, Any]:
    loaded = json.loads(chart.DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def variables(job: str) -> dict[str, str]:
    """What Grafana would put in: the scraped namespace and job, "All" (the
    variables' allValue) for app and backend, a 1 minute rate interval."""
    return {
        "namespace": NAMESPACE,
        "job": job,
        "app": ".*",
        "backend": ".*",
        "__rate_interval": "1m",
        "__range": "5m",
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Prometheus, str]]:
    manifests = rendered()
    service = chart.only(manifests, "Service")
    job = service.name

    def scrape(targets: list[str]) -> dict[str, Any]:
        return chart_scrape(manifests, job, targets)

    workdir = tmp_path_factory.mktemp("stack")
    with running_stack(workdir, scrape, rule_groups(manifests)) as st:
        prom = Prometheus(st.prometheus_url)
        try:
            sims = _sim_urls(workdir)
            _wait_scraped(prom, st, job)
            traffic = Traffic(st.gateway_url, lambda name: sims[name], rounds=4)
            traffic.start()
            _settle(st, prom, traffic, job)
            traffic.join()
            st.traffic_error = traffic.error
            yield st, prom, job
        finally:
            prom.close()


def chart_scrape(manifests: list[chart.Manifest], job: str, targets: list[str]) -> dict[str, Any]:
    return scrape_config_from_service_monitor(
        chart.only(manifests, "ServiceMonitor").doc,
        chart.only(manifests, "Secret").doc,
        job=job,
        namespace=NAMESPACE,
        targets=targets,
    )


def _sim_urls(workdir: Path) -> dict[str, str]:
    """The simulators print the GATEWAY_* lines that point a gateway at them."""
    names = {
        "GATEWAY_OCAMBA_URL": "ocamba",
        "GATEWAY_OMNEO_URL": "omneo",
        "GATEWAY_IMPORT_BATCH_URL": "import_batch",
    }
    urls: dict[str, str] = {}
    for line in (workdir / "simulators.log").read_text().splitlines():
        var, _, value = line.strip().removeprefix("export ").partition("=")
        if var in names:
            # Omneo's and import_batch's APIs are under /api; `/_sim/*` is at the root.
            urls[names[var]] = value.removesuffix("/api")
    assert len(urls) == 3, (workdir / "simulators.log").read_text()
    return urls


def _wait_scraped(prom: Prometheus, st: Stack, job: str, within: float = 20) -> None:
    """Traffic starts once Prometheus has scraped the idle gateway twice: a
    counter that rose before the first scrape would show no rate."""
    instance = st.gateway_url.removeprefix("http://")
    query = f'count_over_time(up{{job="{job}", instance="{instance}"}}[1m]) >= 2'
    deadline = time.monotonic() + within
    while not prom.query(query):
        assert time.monotonic() < deadline, f"Prometheus did not scrape the gateway\n{st.logs()}"
        time.sleep(0.2)


def _settle(st: Stack, prom: Prometheus, traffic: Traffic, job: str, within: float = 60) -> None:
    """Until every dashboard query has data and every expected alert has been
    seen pending or firing (or time is up: the tests then report what is missing)."""
    started = time.monotonic()
    while time.monotonic() < started + within:
        if traffic.done.is_set():
            if traffic.error is not None:
                return
            seen = prom.alerts_seen()
            failures = check_dashboard(prom, dashboard(), variables(job))
            st.settle_report.append(
                f"after {time.monotonic() - started:.1f}s: alerts not seen yet "
                f"{sorted(EXPECTED_ALERTS - seen)}, failing queries {failures}"
            )
            if seen >= EXPECTED_ALERTS and not failures:
                return
        time.sleep(1)


def test_traffic_ran_as_planned(stack: tuple[Stack, Prometheus, str]) -> None:
    st, _, _ = stack
    assert st.traffic_error is None, f"{st.traffic_error!r}\n{st.logs()}"


def test_prometheus_scrapes_the_gateway_as_the_service_monitor_says(
    stack: tuple[Stack, Prometheus, str],
) -> None:
    """Path, scheme and bearer token come from the rendered ServiceMonitor and
    Secret; the gateway refuses /metrics without the token, so up == 1 proves them."""
    st, prom, job = stack
    up = {s["metric"]["instance"]: s["value"][1] for s in prom.query(f'up{{job="{job}"}}')}
    gateway_instance = st.gateway_url.removeprefix("http://")
    assert up.pop(gateway_instance) == "1", st.logs()
    assert set(up.values()) == {"0"}  # the deliberately dead target


def test_every_dashboard_query_returns_data_from_the_gateway(
    stack: tuple[Stack, Prometheus, str],
) -> None:
    st, prom, job = stack
    board = dashboard()
    queries = dashboard_queries(board)
    failures = check_dashboard(prom, board, variables(job))
    assert not failures, json.dumps(failures, indent=2) + "\n" + st.logs()
    # Every panel of the list is there and was checked.
    assert len([q for q in queries if not q.variable]) >= 25
    assert len([q for q in queries if q.variable]) == 4
    exprs = " ".join(q.expr for q in queries)
    for metric in (
        "gateway_inbound_requests_total",
        "gateway_deliveries_total",
        "gateway_backend_call_seconds_bucket",
        "gateway_queue_depth",
        "gateway_oldest_pending_seconds",
        "gateway_retries_total",
        "gateway_rate_limit_wait_seconds_total",
        "gateway_confirmation_lag_seconds_bucket",
        "gateway_unconfirmed_deliveries",
        "gateway_circuit_state",
    ):
        assert metric in exprs, metric


def test_alert_rules_evaluate_cleanly_and_fire_on_the_faults(
    stack: tuple[Stack, Prometheus, str],
) -> None:
    _, prom, _ = stack
    rules = {r["name"]: r for r in prom.rules()}
    assert set(rules) == ALL_ALERTS
    for name, rule in rules.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
    seen = prom.alerts_seen()
    assert seen >= EXPECTED_ALERTS, f"never pending or firing: {EXPECTED_ALERTS - seen}"
    # Targets are scraped, so "no gateway scraped at all" is quiet now (it may have
    # been pending for the second before Prometheus's first scrape).
    assert rules["GatewayAbsent"]["state"] == "inactive", rules["GatewayAbsent"]


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        # A metric the gateway does not export, hidden behind `or vector(1)` so it returns data.
        ('sum(rate(gateway_deliveries_totl{job=~"$job"}[1m])) or vector(1)', "not exported"),
        # A label the metric does not have: the regex matches the missing label, so data comes back.
        ('sum(rate(gateway_deliveries_total{backnd=~".*"}[1m]))', "has no label 'backnd'"),
        # Grouping by a missing label returns one series without it.
        ("sum by (backnd) (rate(gateway_deliveries_total[1m]))", "groups by 'backnd'"),
        # A label value that never occurs.
        ('sum(rate(gateway_deliveries_total{outcome="exploded"}[1m]))', "returns no data"),
        # A real Prometheus series that is not the gateway's.
        ('scrape_duration_seconds{job=~"$job"}', "not exported"),
        # A histogram quantile over a metric that is a counter: nothing comes back.
        ("histogram_quantile(0.9, sum by (le) (rate(gateway_retries_bucket[1m])))", "not exported"),
        ("sum(rate(gateway_deliveries_total[1m]", "does not parse"),
    ],
)
def test_the_checker_fails_a_query_on_what_the_gateway_does_not_export(
    stack: tuple[Stack, Prometheus, str], expr: str, why: str
) -> None:
    _, prom, job = stack
    problems = check_expression(prom, substitute(expr, variables(job)))
    assert any(why in p for p in problems), problems


def test_the_checker_fails_a_dashboard_with_one_bad_panel(
    stack: tuple[Stack, Prometheus, str],
) -> None:
    _, prom, job = stack
    board = dashboard()
    board["panels"].append(
        {
            "type": "timeseries",
            "title": "Typo",
            "targets": [
                {"refId": "A", "expr": 'sum by (backend) (gateway_queue_depht{job=~"$job"})'}
            ],
        }
    )
    board["templating"]["list"].append(
        {"type": "query", "name": "bad", "query": "label_values(gateway_queue_depth, app)"}
    )
    failures = check_dashboard(prom, board, variables(job))
    assert set(failures) == {"Typo [A]", "variable $bad"}, failures
    assert check_variable_query(prom, "label_values(gateway_queue_depth, backend)") == []


def test_alert_rules_pass_promtool_check(tmp_path: Path) -> None:
    """`promtool check rules` on the rules exactly as the chart renders them,
    for the default and the PostgreSQL values."""
    for values in ({}, chart.postgresql_values()):
        rules = tmp_path / "rules.yml"
        rules.write_text(yaml.safe_dump(rule_groups(chart.render(values)), sort_keys=False))
        result = promtool("check", "rules", str(rules))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 7 rules found" in result.stdout + result.stderr


def test_promtool_check_rules_catches_a_broken_rule(tmp_path: Path) -> None:
    groups = rule_groups(chart.render())
    groups["groups"][0]["rules"][0]["expr"] = "sum by (backend) (rate(gateway_deliveries_total[5m]"
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(groups, sort_keys=False))
    result = promtool("check", "rules", str(rules))
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr).lower()
