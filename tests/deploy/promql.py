"""Checks PromQL (the dashboard's panels, its variables, the alert rules) against a
live Prometheus that scrapes a live gateway.

An expression passes only if
- it returns at least one sample with a finite value, evaluated as Prometheus
  would (Grafana's variables replaced first);
- every metric it selects is one the gateway exports (its `Metrics` registry),
  or Prometheus's own `up`, and has series in Prometheus;
- every vector selector, matchers and all, selects series on its own (a matcher
  on a label value that never occurs fails);
- every label it names, in a matcher or in by/without/on/ignoring/group_x, is a
  label of the series it works on.

So `gateway_deliveries_totl or vector(1)`, `sum by (backnd) (...)` and
`{backnd=~".*"}`, which all return data, still fail.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx
from prometheus_client.registry import CollectorRegistry

from gateway.metrics import Metrics

# Identifiers that are PromQL keywords or literals, not metric names.
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
    "inf",
    "nan",
}
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregation operators: `sum by (x) (...)` puts a keyword, not `(`, after the name.
_AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?")
_MATCHER = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*"
)
_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(.*?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S
)
PROMETHEUS_OWN = frozenset({"up"})


class PromQLSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass(frozen=True)
class Selector:
    metric: str | None
    matchers: tuple[Matcher, ...]

    def text(self) -> str:
        inner = ", ".join(f'{m.label}{m.op}"{_escape(m.value)}"' for m in self.matchers)
        return f"{self.metric or ''}{{{inner}}}" if inner or not self.metric else self.metric


@dataclass
class Parsed:
    selectors: list[Selector] = field(default_factory=list)
    grouping_labels: set[str] = field(default_factory=set)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    if literal[0] == "`":
        return body
    return re.sub(r"\\(.)", r"\1", body)


def _skip_space(expr: str, i: int) -> int:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def _skip_string(expr: str, i: int) -> int:
    quote = expr[i]
    i += 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    raise PromQLSyntaxError(f"unterminated string in {expr!r}")


def _parse_matchers(expr: str, i: int) -> tuple[tuple[Matcher, ...], int]:
    """`i` is just after `{`; returns the matchers and the index after `}`."""
    matchers: list[Matcher] = []
    while True:
        i = _skip_space(expr, i)
        if i < len(expr) and expr[i] == "}":
            return tuple(matchers), i + 1
        m = _MATCHER.match(expr, i)
        if m is None:
            raise PromQLSyntaxError(f"bad label matcher at {expr[i : i + 30]!r}")
        matchers.append(Matcher(m.group(1), m.group(2), _unquote(m.group(3))))
        i = _skip_space(expr, m.end())
        if i < len(expr) and expr[i] == ",":
            i += 1
        elif i < len(expr) and expr[i] == "}":
            return tuple(matchers), i + 1
        else:
            raise PromQLSyntaxError(f"expected , or }} at {expr[i : i + 30]!r}")


def _parse_label_list(expr: str, i: int) -> tuple[list[str], int]:
    """`i` is at `(`; returns the labels and the index after `)`."""
    end = expr.find(")", i)
    if end < 0:
        raise PromQLSyntaxError(f"unclosed label list in {expr!r}")
    labels = [part.strip() for part in expr[i + 1 : end].split(",") if part.strip()]
    for label in labels:
        if not _IDENT.fullmatch(label):
            raise PromQLSyntaxError(f"bad label name {label!r}")
    return labels, end + 1


def parse(expr: str) -> Parsed:
    """The vector selectors and grouping labels of a PromQL expression."""
    out = Parsed()
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch in "\"'`":
            i = _skip_string(expr, i)
        elif ch == "[":
            end = expr.find("]", i)
            if end < 0:
                raise PromQLSyntaxError(f"unclosed [ in {expr!r}")
            i = end + 1
        elif ch == "{":
            matchers, i = _parse_matchers(expr, i + 1)
            out.selectors.append(Selector(None, matchers))
        elif ch == "#":  # comment to end of line
            end = expr.find("\n", i)
            i = len(expr) if end < 0 else end
        elif ch.isdigit() or (ch == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            m = _NUMBER.match(expr, i)
            assert m is not None
            i = m.end()
            # A duration's unit (5m) after offset is an identifier-like suffix.
            while i < len(expr) and expr[i].isalpha():
                i += 1
        elif m := _IDENT.match(expr, i):
            word = m.group(0)
            j = _skip_space(expr, m.end())
            nxt = expr[j] if j < len(expr) else ""
            if word.lower() in _KEYWORDS:
                if word.lower() in _GROUPING and nxt == "(":
                    labels, j = _parse_label_list(expr, j)
                    out.grouping_labels.update(labels)
                i = j if word.lower() in _GROUPING else m.end()
            elif nxt == "(" or word in _AGGREGATIONS:
                i = m.end()  # a function or an aggregation
            elif nxt == "{":
                matchers, i = _parse_matchers(expr, j + 1)
                out.selectors.append(Selector(word, matchers))
            else:
                out.selectors.append(Selector(word, ()))
                i = m.end()
        else:
            i += 1
    return out


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replaces Grafana's `$name` and `${name}` (longest names first)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name])
        expr = re.sub(r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])", variables[name], expr)
    leftover = re.search(r"\$\{?[A-Za-z_]\w*", expr)
    if leftover:
        raise ValueError(f"unreplaced variable {leftover.group(0)} in {expr!r}")
    return expr


@cache
def exported_metric_names() -> frozenset[str]:
    """Every series name the gateway's /metrics can carry: counters' `_total`,
    histograms' `_bucket`/`_sum`/`_count`, gauges, and the `_created` samples."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.update({family.name + "_total", family.name + "_created"})
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count", "_created"))
        else:
            names.add(family.name)
    assert metrics.registry is registry
    return frozenset(names)


class Prometheus:
    """The few HTTP API calls the checks need."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, params: Mapping[str, str | list[str]]) -> Any:
        r = self.http.get(path, params=params)
        body = r.json()
        if body.get("status") != "success":
            raise PromQLSyntaxError(f"{path} {dict(params)}: {body.get('error', r.text)}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result = data["result"]
        assert isinstance(result, list)
        return result

    def series_labels(self, selector: str) -> set[str]:
        data = self._get("/api/v1/series", {"match[]": [selector]})
        return {name for series in data for name in series if name != "__name__"}

    def metric_names(self) -> set[str]:
        return set(self._get("/api/v1/label/__name__/values", {}))

    def rules(self) -> list[dict[str, Any]]:
        groups = self._get("/api/v1/rules", {})["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def alerts_seen(self, window: str = "15m") -> set[str]:
        """Alerts pending or firing at any evaluation within `window`, from the
        ALERTS series Prometheus writes at every evaluation."""
        result = self.query(f"group by (alertname) (last_over_time(ALERTS[{window}]))")
        return {s["metric"]["alertname"] for s in result}


def _finite(sample: dict[str, Any]) -> bool:
    return math.isfinite(float(sample["value"][1]))


def check_expression(prom: Prometheus, expr: str) -> list[str]:
    """Problems with one (already substituted) expression; empty when it is good."""
    try:
        parsed = parse(expr)
        result = prom.query(expr)
    except PromQLSyntaxError as exc:
        return [f"does not parse: {exc}"]
    problems: list[str] = []
    if not result:
        problems.append("returns no data")
    elif not any(_finite(s) for s in result):
        problems.append("returns only NaN/Inf (no observations in the window)")
    if not parsed.selectors:
        problems.append("selects no metric")
    known = prom.metric_names()
    labels_in_play: set[str] = set()
    for sel in parsed.selectors:
        if sel.metric is None:
            problems.append(f"selector {sel.text()} names no metric")
            continue
        if sel.metric not in exported_metric_names() | PROMETHEUS_OWN:
            problems.append(f"metric {sel.metric} is not exported by the gateway")
        if sel.metric not in known:
            problems.append(f"metric {sel.metric} has no series in Prometheus")
            continue
        labels = prom.series_labels(sel.metric)
        labels_in_play |= labels
        for m in sel.matchers:
            if m.label not in labels:
                problems.append(f"{sel.metric} has no label {m.label!r} (has {sorted(labels)})")
        if sel.matchers and not prom.query(sel.text()):
            problems.append(f"selector {sel.text()} matches no series")
    for label in sorted(parsed.grouping_labels - labels_in_play):
        if labels_in_play:
            problems.append(f"groups by {label!r}, which none of its series carries")
    return problems


def check_variable_query(prom: Prometheus, query: str) -> list[str]:
    """`label_values(selector, label)`: the selector selects series that carry `label`."""
    m = _LABEL_VALUES.match(query)
    if m is None:
        return [f"not a label_values() query: {query!r}"]
    selector, label = m.group(1), m.group(2)
    problems = [p for p in check_selector_only(prom, selector)]
    if not problems and label not in prom.series_labels(selector):
        problems.append(f"{selector} has no label {label!r}")
    return problems


def check_selector_only(prom: Prometheus, selector: str) -> list[str]:
    parsed = parse(selector)
    if len(parsed.selectors) != 1 or parsed.selectors[0].metric is None:
        return [f"not one metric selector: {selector!r}"]
    sel = parsed.selectors[0]
    problems: list[str] = []
    if sel.metric not in exported_metric_names() | PROMETHEUS_OWN:
        problems.append(f"metric {sel.metric} is not exported by the gateway")
    if not prom.query(sel.text()):
        problems.append(f"selector {sel.text()} matches no series")
        return problems
    labels = prom.series_labels(sel.metric or "")
    problems += [
        f"{sel.metric} has no label {m.label!r}" for m in sel.matchers if m.label not in labels
    ]
    return problems


@dataclass(frozen=True)
class DashboardQuery:
    where: str  # panel title and refId, or variable name
    expr: str
    variable: bool = False


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[DashboardQuery]:
    out: list[DashboardQuery] = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var["query"]
            expr = q["query"] if isinstance(q, dict) else q
            out.append(DashboardQuery(f"variable ${var['name']}", expr, variable=True))

    def walk(panels: Iterable[Mapping[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("hide"):
                    continue
                out.append(DashboardQuery(f"{panel['title']} [{target['refId']}]", target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    return out


def check_dashboard(
    prom: Prometheus, dashboard: Mapping[str, Any], variables: Mapping[str, str]
) -> dict[str, list[str]]:
    """{panel/variable: problems} for every query that has any."""
    failures: dict[str, list[str]] = {}
    for q in dashboard_queries(dashboard):
        try:
            expr = substitute(q.expr, variables)
        except ValueError as exc:
            failures[q.where] = [str(exc)]
            continue
        problems = check_variable_query(prom, expr) if q.variable else check_expression(prom, expr)
        if problems:
            failures[q.where] = problems
    return failures
