"""Renders helm/gateway with Helm's own engine (helm-python-sdk embeds Helm's Go
SDK; no helm binary) and validates what comes out."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "gateway"
DASHBOARD = CHART / "dashboards" / "profile-gateway.json"
POSTGRESQL_VALUES = CHART / "values-postgresql.yaml"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

RELEASE = "gw"
NAMESPACE = "gateway"
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest
# one kubernetes-validate knows: every manifest must pass both.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}


@dataclass(frozen=True)
class Manifest:
    template: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])


def postgresql_values() -> dict[str, Any]:
    values = yaml.safe_load(POSTGRESQL_VALUES.read_text())
    assert isinstance(values, dict)
    return values


# The chart refuses to render without an encryption key (or allowPlaintext), so
# the value sets below get one in the chart-made Secret, as an install would.
TEST_ENCRYPTION_KEYS = "k1:" + base64.b64encode(b"k" * 32).decode()


def with_keys(values: dict[str, Any] | None) -> dict[str, Any]:
    """`values` with TEST_ENCRYPTION_KEYS in secrets.values, unless they bring
    their own Secret, key or allowPlaintext."""
    out = copy.deepcopy(values or {})
    secrets = out.setdefault("secrets", {})
    if out.get("allowPlaintext") or secrets.get("existingSecret"):
        return out
    secrets.setdefault("values", {}).setdefault("GATEWAY_ENCRYPTION_KEYS", TEST_ENCRYPTION_KEYS)
    return out


def render_raw(
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    keys: bool = True,
) -> dict[str, str]:
    """The chart's templates rendered; `keys=False` renders `values` as given."""
    chart = helm_python.Chart.load(str(CHART))
    given = with_keys(values) if keys else (values or {})
    return chart.render(values=given, name=release, namespace=namespace, is_install=True)


def render(
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    keys: bool = True,
) -> list[Manifest]:
    """Every object the chart renders, parsed (NOTES.txt left out)."""
    out: list[Manifest] = []
    rendered = render_raw(values, release=release, namespace=namespace, keys=keys)
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), f"{template}: not a mapping"
                out.append(Manifest(template, doc))
    return out


def only(manifests: list[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m.kind == kind]
    assert len(found) == 1, f"expected one {kind}, got {[m.name for m in found]}"
    return found[0]


def kinds(manifests: list[Manifest]) -> list[str]:
    return sorted(m.kind for m in manifests)


def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    name = CRD_SCHEMAS.get((api_version, kind))
    if name is None:
        return None
    schema = json.loads((SCHEMAS / name).read_text())
    assert isinstance(schema, dict)
    return schema


def validation_errors(manifest: Manifest) -> Iterator[str]:
    """Why `manifest` would be refused: Kubernetes' own OpenAPI schemas (strict:
    unknown fields are errors) for built-in kinds, the vendored CRD-structure
    schemas for prometheus-operator kinds. A kind with neither is an error too."""
    doc = manifest.doc
    where = f"{manifest.template} {manifest.kind}/{manifest.name}"
    schema = crd_schema(doc["apiVersion"], doc["kind"])
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema)
        for error in validator.iter_errors(doc):
            path = ".".join(str(p) for p in error.absolute_path)
            yield f"{where}: {path}: {error.message}"
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            yield f"{where} (Kubernetes {version}): {path}: {exc.message}"
        except kubernetes_validate.SchemaNotFoundError as exc:
            yield f"{where} (Kubernetes {version}): {exc.message}"
