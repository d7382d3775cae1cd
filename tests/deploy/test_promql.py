"""The PromQL reader the dashboard checks rely on (no Prometheus needed)."""

from __future__ import annotations

import pytest

from tests.deploy.promql import (
    Matcher,
    PromQLSyntaxError,
    Selector,
    exported_metric_names,
    parse,
    substitute,
)


def test_selectors_and_grouping_labels_are_found() -> None:
    parsed = parse(
        "sum by (backend, outcome) ("
        'rate(gateway_deliveries_total{job=~"$job", outcome!~"a|b"}[5m]))'
        " / on (backend) group_left sum without (le) (gateway_queue_depth) > 0.5"
    )
    assert parsed.selectors == [
        Selector(
            "gateway_deliveries_total",
            (Matcher("job", "=~", "$job"), Matcher("outcome", "!~", "a|b")),
        ),
        Selector("gateway_queue_depth", ()),
    ]
    assert parsed.grouping_labels == {"backend", "outcome", "le"}


def test_functions_keywords_numbers_and_strings_are_not_metrics() -> None:
    parsed = parse(
        "histogram_quantile(0.99, sum(rate(x_bucket[1m])) by (le)) offset 5m "
        'or label_replace(vector(1e3), "dst", "v", "src", "(.*)") and on() NaN'
    )
    assert [s.metric for s in parsed.selectors] == ["x_bucket"]
    assert parsed.grouping_labels == {"le"}


def test_an_unclosed_matcher_is_a_syntax_error() -> None:
    with pytest.raises(PromQLSyntaxError):
        parse('gateway_queue_depth{backend="omneo"')


def test_grafana_variables_are_replaced_and_leftovers_refused() -> None:
    expr = 'rate(x{a=~"$app", b="${backend}"}[$__rate_interval])'
    out = substitute(expr, {"app": ".*", "backend": "omneo", "__rate_interval": "1m"})
    assert out == 'rate(x{a=~".*", b="omneo"}[1m])'
    with pytest.raises(ValueError, match=r"\$job"):
        substitute('x{job="$job"}', {})


def test_the_gateways_exported_names_come_from_its_registry() -> None:
    names = exported_metric_names()
    assert "gateway_deliveries_total" in names  # a counter gets _total
    assert "gateway_backend_call_seconds_bucket" in names  # a histogram its buckets
    assert "gateway_queue_depth" in names  # a gauge its own name
    assert "gateway_deliveries" not in names
