"""helm/gateway rendered by Helm's engine, validated against the Kubernetes
schemas, and held to what the gateway needs (probes, termination, settings,
secrets, the two database settings)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

from gateway.config import SECRET_SETTINGS, Settings, describe
from gateway.mapping.load import mappings_for
from tests.deploy import chart
from tests.deploy.chart import Manifest, only, render
from tests.tokens import api_token, entry

SETTINGS = {name for name, _ in describe()}
SECRET_NAMES = {"GATEWAY_" + name.upper() for name in SECRET_SETTINGS}
SECRETS_DIR = "/var/run/secrets/gateway"
CRM = entry("crm", api_token("crm"), "")
SCOPED = f"{CRM},{entry('ops', api_token('ops'), 'read+operate+erase')}"
GIVEN_METRICS_TOKEN = api_token("metrics")
DEFAULT_KINDS = [
    "ConfigMap",
    "ConfigMap",
    "Deployment",
    "PersistentVolumeClaim",
    "PrometheusRule",
    "Secret",
    "Service",
    "ServiceAccount",
    "ServiceMonitor",
]
POSTGRES_KINDS = [
    "ConfigMap",
    "ConfigMap",
    "Deployment",
    "HorizontalPodAutoscaler",
    "Job",
    "PodDisruptionBudget",
    "PrometheusRule",
    "Service",
    "ServiceAccount",
    "ServiceMonitor",
]


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


DIGEST = "sha256:" + "0123456789abcdef" * 4
# With the image by digest and the NetworkPolicy on, nothing checkov checks fails.
HARDENED_POSTGRESQL = "PostgreSQL, hardened: image digest, NetworkPolicy"
HARDENED_SQLITE = "SQLite, hardened: image digest, NetworkPolicy"


# Every value set the suite validates: the two documented settings and the
# switches that change which objects render or how.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default (SQLite, one replica)": {},
    "PostgreSQL, autoscaled (values-postgresql.yaml)": chart.postgresql_values(),
    "PostgreSQL, 3 fixed replicas, chart-made Secret": merged(
        chart.postgresql_values(),
        {
            "autoscaling": {"enabled": False},
            "replicaCount": 3,
            "secrets": {"existingSecret": "", "values": {"GATEWAY_API_TOKENS": CRM}},
            "metrics": {"serviceMonitor": {"bearerTokenFromSecret": False}},
        },
    ),
    "SQLite on an existing claim, metrics token": {
        "persistence": {"existingClaim": "gateway-data"},
        "secrets": {"values": {"GATEWAY_METRICS_TOKEN": "m" * 32}},
    },
    "SQLite without persistence, no monitoring objects": {
        "persistence": {"enabled": False},
        "metrics": {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}},
        "grafana": {"dashboard": {"enabled": False}},
    },
    HARDENED_POSTGRESQL: merged(
        chart.postgresql_values(),
        {
            "image": {"digest": DIGEST},
            "networkPolicy": {
                "enabled": True,
                "ingress": {"namespaces": ["crm", "monitoring"]},
                "egress": {"database": {"namespace": "db", "podLabels": {"cnpg.io/cluster": "pg"}}},
            },
        },
    ),
    HARDENED_SQLITE: {
        "image": {"digest": DIGEST},
        "networkPolicy": {"enabled": True, "ingress": {"namespaces": ["crm"]}},
    },
}


def pod_specs(manifests: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{m.kind}/{m.name}", m.doc["spec"]["template"]["spec"])
        for m in manifests
        if m.kind in {"Deployment", "Job"}
    ]


def container(manifests: list[Manifest], kind: str = "Deployment") -> dict[str, Any]:
    (c,) = only(manifests, kind).doc["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def secret_sources(m: Manifest) -> dict[str, list[dict[str, str]]]:
    """Secret name -> its items, in the pod's projected `secrets` volume."""
    volumes = {v["name"]: v for v in m.doc["spec"]["template"]["spec"]["volumes"]}
    if "secrets" not in volumes:
        return {}
    sources = volumes["secrets"]["projected"]["sources"]
    return {src["secret"]["name"]: src["secret"]["items"] for src in sources}


def schema_error(values: dict[str, Any]) -> str:
    with pytest.raises((helm_python.HelmValuesError, helm_python.HelmRenderError)) as info:
        chart.render_raw(values)
    return str(info.value)


# --- Helm lint and rendering ---------------------------------------------------


def test_helm_lint_strict_finds_nothing_above_info() -> None:
    for values in ({}, chart.postgresql_values(), VALUE_SETS[HARDENED_POSTGRESQL]):
        report = helm_python.lint(str(chart.CHART), chart.with_keys(values), strict=True)
        assert report["errors"] == [], report
        above_info = [m for m in report["messages"] if m["severity"] >= 2]
        assert above_info == [], report["messages"]


def test_default_values_render_the_sqlite_single_replica_setting() -> None:
    manifests = render()
    assert chart.kinds(manifests) == DEFAULT_KINDS
    deploy = only(manifests, "Deployment").doc
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    c = container(manifests)
    env = env_of(c)
    assert env["GATEWAY_DATABASE_URL"] == "sqlite:////data/gateway.db"
    assert env["GATEWAY_MIGRATE_ON_START"] == "true"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == "/data"
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    pvc = only(manifests, "PersistentVolumeClaim")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc.name
    assert pvc.doc["spec"]["accessModes"] == ["ReadWriteOnce"]
    # Uninstalling the release must not delete every stored write.
    assert pvc.doc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_postgresql_values_render_the_multi_replica_setting() -> None:
    values = chart.postgresql_values()
    manifests = render(values)
    assert chart.kinds(manifests) == POSTGRES_KINDS
    deploy = only(manifests, "Deployment").doc
    assert "replicas" not in deploy["spec"]  # the HorizontalPodAutoscaler owns it
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    c = container(manifests)
    env = env_of(c)
    pg = values["database"]["postgresql"]
    # The URL (it holds a password) is a file from its Secret, not a variable.
    url_file = f"{SECRETS_DIR}/GATEWAY_DATABASE_URL"
    url_item = {"key": pg["secretKey"], "path": "GATEWAY_DATABASE_URL"}
    assert env["GATEWAY_DATABASE_URL_FILE"] == url_file
    assert "GATEWAY_DATABASE_URL" not in env
    sources = secret_sources(only(manifests, "Deployment"))
    assert sources[pg["existingSecret"]] == [url_item]
    # The tokens Secret: the keys values-postgresql.yaml names, each a file.
    tokens = values["secrets"]["existingSecret"]
    assert [i["key"] for i in sources[tokens]] == sorted(values["secrets"]["existingSecretKeys"])
    assert {"secretRef": {"name": tokens}} not in c["envFrom"]
    assert env["GATEWAY_MIGRATE_ON_START"] == "false"
    assert "data" not in {m["name"] for m in c["volumeMounts"]}
    # `gateway migrate` runs first, as a hook, with the same URL and image.
    job = only(manifests, "Job")
    hooks = job.doc["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in hooks["helm.sh/hook-delete-policy"]
    jc = container(manifests, "Job")
    assert jc["args"] == ["migrate"] and jc["image"] == c["image"]
    assert env_of(jc)["GATEWAY_DATABASE_URL_FILE"] == url_file
    # Its volume holds the URL alone: the tokens are not the migration's business.
    assert secret_sources(job) == {pg["existingSecret"]: [url_item]}
    assert {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True} in jc["volumeMounts"]
    # A hook runs before the chart's own ConfigMap and Secret exist.
    assert "envFrom" not in jc
    # The migrate pod must not be taken for a gateway pod by the Service or the PDB.
    selector = only(manifests, "Service").doc["spec"]["selector"]
    job_labels = job.doc["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= job_labels.items()
    hpa = only(manifests, "HorizontalPodAutoscaler").doc["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": only(manifests, "Deployment").name,
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    pdb = only(manifests, "PodDisruptionBudget").doc["spec"]
    assert pdb["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert pdb["maxUnavailable"] == 1
    spread = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_rendered_manifest_validates(name: str) -> None:
    """Kubernetes' OpenAPI schemas, strict (unknown fields are errors), for the
    oldest (1.25) and newest Kubernetes kubernetes-validate knows; the
    prometheus-operator CRD structure for ServiceMonitor and PrometheusRule."""
    manifests = render(VALUE_SETS[name])
    assert manifests
    errors = [e for m in manifests for e in chart.validation_errors(m)]
    assert errors == []


def test_the_validators_reject_broken_manifests() -> None:
    manifests = render()
    deploy = copy.deepcopy(only(manifests, "Deployment"))
    deploy.doc["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    assert any("livenessProbes" in e for e in chart.validation_errors(deploy))
    deploy = copy.deepcopy(only(manifests, "Deployment"))
    deploy.doc["spec"]["replicas"] = "one"
    assert list(chart.validation_errors(deploy))
    sm = copy.deepcopy(only(manifests, "ServiceMonitor"))
    sm.doc["spec"]["endpoints"][0]["interval"] = "30 seconds"
    assert any("interval" in e for e in chart.validation_errors(sm))
    sm = copy.deepcopy(only(manifests, "ServiceMonitor"))
    sm.doc["spec"]["endpoints"][0]["bearerToken"] = "x"
    assert list(chart.validation_errors(sm))
    rule = copy.deepcopy(only(manifests, "PrometheusRule"))
    rule.doc["spec"]["groups"][0]["rules"][0]["record"] = "x:y"
    assert list(chart.validation_errors(rule))
    rule = copy.deepcopy(only(manifests, "PrometheusRule"))
    rule.doc["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    assert list(chart.validation_errors(rule))
    unknown = Manifest(
        "x.yaml", {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    )
    assert list(chart.validation_errors(unknown))


# --- What the pods need --------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_pods_meet_the_restricted_pod_security_standard(name: str) -> None:
    for where, spec in pod_specs(render(VALUE_SETS[name])):
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["runAsUser"] != 0, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), where
        assert all("hostPath" not in v for v in spec.get("volumes", [])), where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc.get("privileged"), where
            assert sc["readOnlyRootFilesystem"] is True, where
            # The only writable places: the data volume and an emptyDir /tmp.
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, where
            assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"], where


def test_probes_hit_livez_and_readyz_on_the_serving_port() -> None:
    for values in ({}, chart.postgresql_values()):
        c = container(render(values))
        (port,) = c["ports"]
        assert (port["name"], port["containerPort"]) == ("http", 8080)
        env = env_of(c)
        assert (env["GATEWAY_HOST"], env["GATEWAY_PORT"]) == ("0.0.0.0", "8080")
        assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert c["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["args"] == ["serve"]


@pytest.mark.parametrize("values", [{}, chart.postgresql_values()], ids=["sqlite", "postgresql"])
def test_termination_grace_covers_the_dispatcher_drain(values: dict[str, Any]) -> None:
    manifests = render(values)
    spec = only(manifests, "Deployment").doc["spec"]["template"]["spec"]
    c = container(manifests)
    grace = float(env_of(c)["GATEWAY_SHUTDOWN_GRACE"])
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # Endpoints drop the pod during the preStop sleep; then uvicorn drains open
    # requests and the dispatcher gets GATEWAY_SHUTDOWN_GRACE for its batch.
    assert spec["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + grace + 15


def test_the_chart_refuses_a_grace_period_too_short_to_drain() -> None:
    err = schema_error(
        {
            "termination": {
                "preStopSleepSeconds": 5,
                "dispatcherGraceSeconds": 30,
                "terminationGracePeriodSeconds": 40,
            }
        }
    )
    assert "terminationGracePeriodSeconds" in err and "50" in err
    longer = {
        "termination": {
            "preStopSleepSeconds": 5,
            "dispatcherGraceSeconds": 30,
            "terminationGracePeriodSeconds": 60,
        }
    }
    env = env_of(container(render(longer)))
    assert env["GATEWAY_SHUTDOWN_GRACE"] == "30"


def test_config_and_secrets_reach_the_container() -> None:
    values = {
        "config": {"GATEWAY_OMNEO_URL": "https://omneo.example/api", "GATEWAY_MAX_ATTEMPTS": 5},
        "secrets": {"values": {"GATEWAY_API_TOKENS": CRM, "GATEWAY_OMNEO_TOKEN": "o"}},
    }
    manifests = render(values)
    config = next(
        m for m in manifests if m.kind == "ConfigMap" and not m.name.endswith("-dashboard")
    )
    assert config.doc["data"]["GATEWAY_OMNEO_URL"] == "https://omneo.example/api"
    assert config.doc["data"]["GATEWAY_MAX_ATTEMPTS"] == "5"  # ConfigMap values are strings
    secret = only(manifests, "Secret")
    assert secret.doc["stringData"]["GATEWAY_API_TOKENS"] == CRM
    c = container(manifests)
    # The Secret is mounted read-only, one file per key, and each GATEWAY_*_FILE
    # points at its file: no credential is an environment variable.
    assert c["envFrom"] == [{"configMapRef": {"name": config.name}}]
    keys = sorted(secret.doc["stringData"])
    assert secret_sources(only(manifests, "Deployment")) == {
        secret.name: [{"key": k, "path": k} for k in keys]
    }
    assert {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True} in c["volumeMounts"]
    env = env_of(c)
    assert {k: env[k + "_FILE"] for k in keys} == {k: f"{SECRETS_DIR}/{k}" for k in keys}
    assert not set(keys) & set(env)
    # A changed setting or secret changes the pod template, so the pods roll.
    annotations = only(manifests, "Deployment").doc["spec"]["template"]["metadata"]["annotations"]
    other = render(merged(values, {"secrets": {"values": {"GATEWAY_API_TOKENS": SCOPED}}}))
    other_annotations = only(other, "Deployment").doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/secret"] != other_annotations["checksum/secret"]
    assert annotations["checksum/config"] == other_annotations["checksum/config"]


def test_the_mapping_file_is_a_configmap_mounted_where_gateway_mapping_file_points() -> None:
    toml = (chart.ROOT / "docs" / "mapping.example.toml").read_text()
    manifests = render({"mapping": toml})
    [mapping] = [m for m in manifests if m.kind == "ConfigMap" and m.name.endswith("-mapping")]
    assert mapping.doc["data"] == {"mapping.toml": toml}
    c = container(manifests)
    assert env_of(c)["GATEWAY_MAPPING_FILE"] == "/etc/gateway/mapping.toml"
    assert {"name": "mapping", "mountPath": "/etc/gateway", "readOnly": True} in c["volumeMounts"]
    spec = only(manifests, "Deployment").doc["spec"]["template"]["spec"]
    assert {"name": "mapping", "configMap": {"name": mapping.name}} in spec["volumes"]
    # The file as the gateway will read it: valid, and as the example says.
    mounted = mappings_for(Settings(mapping_file=str(chart.ROOT / "docs" / "mapping.example.toml")))
    assert mounted.import_batch.field_name == "CRM_ID"
    # A changed file rolls the pods.
    annotations = only(manifests, "Deployment").doc["spec"]["template"]["metadata"]["annotations"]
    other = render({"mapping": toml.replace("CRM_ID", "CUST_ID")})
    other_annotations = only(other, "Deployment").doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/mapping"] != other_annotations["checksum/mapping"]
    # Without one: no ConfigMap, no mount, no variable, the built-in mapping.
    plain = render()
    assert not [m for m in plain if m.name.endswith("-mapping")]
    assert "GATEWAY_MAPPING_FILE" not in env_of(container(plain))
    assert all(m["name"] != "mapping" for m in container(plain)["volumeMounts"])


def test_the_chart_takes_scoped_tokens_as_the_gateway_reads_them() -> None:
    manifests = render({"secrets": {"values": {"GATEWAY_API_TOKENS": SCOPED}}})
    passed = only(manifests, "Secret").doc["stringData"]["GATEWAY_API_TOKENS"]
    assert passed == SCOPED
    tokens = Settings.from_env({"GATEWAY_API_TOKENS": passed}).api_token_map()
    assert {c.app: sorted(c.scopes) for c in tokens.values()} == {
        "crm": ["write"],
        "ops": ["erase", "operate", "read"],
    }


def test_an_existing_secret_replaces_the_charts() -> None:
    manifests = render({"secrets": {"existingSecret": "gateway-tokens"}})
    assert "Secret" not in chart.kinds(manifests)
    assert {"secretRef": {"name": "gateway-tokens"}} in container(manifests)["envFrom"]
    # With /metrics open, no metrics token is known to be in it unless said so.
    opened = {"secrets": {"existingSecret": "gateway-tokens"}, "metrics": {"requireToken": False}}
    endpoint = only(render(opened), "ServiceMonitor").doc["spec"]["endpoints"][0]
    assert "authorization" not in endpoint
    said = render(
        {
            "secrets": {"existingSecret": "gateway-tokens"},
            "metrics": {"requireToken": False, "serviceMonitor": {"bearerTokenFromSecret": True}},
        }
    )
    auth = only(said, "ServiceMonitor").doc["spec"]["endpoints"][0]["authorization"]
    assert auth == {
        "type": "Bearer",
        "credentials": {"name": "gateway-tokens", "key": "GATEWAY_METRICS_TOKEN"},
    }


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": 2}, "/replicaCount"),
        ({"autoscaling": {"enabled": True}}, "/autoscaling/enabled"),
        ({"database": {"type": "postgresql"}}, "existingSecret"),
        ({"database": {"type": "mysql"}}, "/database/type"),
        ({"config": {"GATEWAY_API_TOKENS": CRM}}, "GATEWAY_API_TOKENS"),
        ({"secrets": {"values": {"GATEWAY_API_TOKENS": "crm:short"}}}, "GATEWAY_API_TOKENS"),
        ({"secrets": {"values": {"GATEWAY_API_TOKENS": CRM + ":admin"}}}, "GATEWAY_API_TOKENS"),
        ({"secrets": {"values": {"GATEWAY_METRICS_TOKEN": "m"}}}, "GATEWAY_METRICS_TOKEN"),
        ({"config": {"GATEWAY_DATABASE_URL": "sqlite:///x"}}, "GATEWAY_DATABASE_URL"),
        ({"config": {"omneo_url": "x"}}, "omneo_url"),
        ({"secrets": {"values": {"GATEWAY_OMNEO_URL": "x"}}}, "GATEWAY_OMNEO_URL"),
        ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "interval"),
        ({"replicas": 3}, "replicas"),
        ({"mapping": {"ocamba": {}}}, "/mapping"),
        ({"config": {"GATEWAY_MAPPING_FILE": "/x.toml"}}, "GATEWAY_MAPPING_FILE"),
        ({"config": {"GATEWAY_API_TOKENS_FILE": "/x"}}, "GATEWAY_API_TOKENS_FILE"),
        ({"secrets": {"existingSecretKeys": ["GATEWAY_TOKENS"]}}, "existingSecretKeys"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"networkPolicy": {"egress": {"backends": [{"cidr": "api.example.com"}]}}}, "backends"),
        ({"networkPolicy": {"ingress": {"namespaces": ["Bad_Name"]}}}, "namespaces"),
    ],
)
def test_values_schema_refuses_settings_that_cannot_work(
    values: dict[str, Any], complaint: str
) -> None:
    assert complaint in schema_error(values)


def test_values_schema_is_valid_and_accepts_the_shipped_values() -> None:
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    jsonschema.Draft7Validator(schema).validate(merged(defaults, chart.postgresql_values()))


def test_every_setting_the_chart_names_is_a_gateway_setting() -> None:
    """The chart's setting names against gateway/config.py: a misspelt or
    removed setting in values, schema or templates fails here."""
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    named = set(schema["definitions"]["secretSettingName"]["enum"])
    named |= set(schema["definitions"]["chartManagedSettingName"]["enum"])
    defaults = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    named |= set(defaults["config"]) | set(defaults["secrets"]["values"])
    named |= set(chart.postgresql_values()["config"])
    named |= {
        n.removesuffix("_FILE") for n in schema["definitions"]["secretFileSettingName"]["enum"]
    }
    for values in ({}, chart.postgresql_values(), {"secrets": {"asFiles": False}}):
        manifests = render(values)
        for _, spec in pod_specs(manifests):
            for c in spec["containers"]:
                for e in c.get("env", []):
                    name = e["name"]
                    # GATEWAY_<NAME>_FILE: a credential the gateway reads from a file.
                    if name.endswith("_FILE") and name.removesuffix("_FILE") in SECRET_NAMES:
                        name = name.removesuffix("_FILE")
                    named.add(name)
    assert named - SETTINGS == set()
    assert named >= {"GATEWAY_API_TOKENS", "GATEWAY_DATABASE_URL", "GATEWAY_SHUTDOWN_GRACE"}


def test_service_monitor_and_rules_agree_with_the_service() -> None:
    manifests = render()
    service = only(manifests, "Service").doc
    deploy = only(manifests, "Deployment").doc
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert (
        service["spec"]["selector"].items()
        <= deploy["spec"]["template"]["metadata"]["labels"].items()
    )
    sm = only(manifests, "ServiceMonitor").doc["spec"]
    assert sm["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["namespaceSelector"] == {"matchNames": [chart.NAMESPACE]}
    (endpoint,) = sm["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # Scraped through this Service, series carry job=<service name>: the alerts select that.
    rules = only(manifests, "PrometheusRule").doc["spec"]["groups"][0]["rules"]
    scrape = f'job="{only(manifests, "Service").name}", namespace="{chart.NAMESPACE}"'
    assert all(scrape in rule["expr"] for rule in rules)
    assert {r["alert"] for r in rules} == {
        "GatewayDeadLettersGrowing",
        "GatewayOldestPendingTooOld",
        "GatewayBackendErrorRatioHigh",
        "GatewayOmneoUnconfirmedShareHigh",
        "GatewayCircuitOpen",
        "GatewayDown",
        "GatewayAbsent",
    }


def test_dashboard_configmap_carries_the_dashboard_for_the_sidecar() -> None:
    manifests = render()
    cm = next(m for m in manifests if m.name.endswith("-dashboard"))
    assert cm.doc["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm.doc["metadata"]["annotations"]["grafana_folder"] == "Profile gateway"
    (key,) = cm.doc["data"]
    assert key.endswith(".json")
    assert json.loads(cm.doc["data"][key]) == json.loads(chart.DASHBOARD.read_text())
    other = render(
        {
            "grafana": {
                "dashboard": {
                    "label": "dashboards",
                    "labelValue": "gateway",
                    "namespace": "monitoring",
                }
            }
        }
    )
    cm = next(m for m in other if m.name.endswith("-dashboard"))
    assert cm.doc["metadata"]["labels"]["dashboards"] == "gateway"
    assert cm.doc["metadata"]["namespace"] == "monitoring"


def test_dashboard_json_is_well_formed_for_grafana() -> None:
    board = json.loads(chart.DASHBOARD.read_text())
    assert board["uid"] == "profile-gateway" and board["title"]
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
    # No two panels overlap.
    cells = set()
    for p in panels:
        pos = p["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "write requests by app",
        "refused",
        "deliveries by backend and outcome",
        "backend call latency",
        "queue depth",
        "oldest pending",
        "retries",
        "rate-limit waits",
        "circuit breaker",
        "dead letters",
        "confirmation lag",
        "unconfirmed share",
    ):
        assert topic in titles, topic


def test_the_chart_refuses_to_render_without_encryption_keys() -> None:
    """Profiles would be stored in clear: refused unless said so in as many words."""
    for values in ({}, {"secrets": {"values": {"GATEWAY_ENCRYPTION_KEYS": ""}}}):
        with pytest.raises(helm_python.HelmRenderError) as info:
            chart.render_raw(values, keys=False)
        assert "GATEWAY_ENCRYPTION_KEYS is empty" in str(info.value)
        assert "allowPlaintext" in str(info.value)
    trial = render({"allowPlaintext": True}, keys=False)
    assert only(trial, "Secret").doc["stringData"].get("GATEWAY_ENCRYPTION_KEYS", "") == ""
    keyed = render()
    assert only(keyed, "Secret").doc["stringData"]["GATEWAY_ENCRYPTION_KEYS"] == (
        chart.TEST_ENCRYPTION_KEYS
    )
    # Behind an existing Secret the chart cannot look: the pod takes the key
    # from it by name, so a Secret without it stops the pod from starting.
    env = env_of(container(render({"secrets": {"existingSecret": "tokens"}}, keys=False)))
    assert env["GATEWAY_ENCRYPTION_KEYS"] == {
        "secretKeyRef": {"name": "tokens", "key": "GATEWAY_ENCRYPTION_KEYS"}
    }
    plain = {"secrets": {"existingSecret": "tokens"}, "allowPlaintext": True}
    assert "GATEWAY_ENCRYPTION_KEYS" not in env_of(container(render(plain, keys=False)))


def test_the_metrics_token_is_on_by_default() -> None:
    manifests = render()
    token = only(manifests, "Secret").doc["stringData"]["GATEWAY_METRICS_TOKEN"]
    assert len(token) == 48 and token.isalnum()
    auth = only(manifests, "ServiceMonitor").doc["spec"]["endpoints"][0]["authorization"]
    assert auth["credentials"] == {
        "name": only(manifests, "Secret").name,
        "key": "GATEWAY_METRICS_TOKEN",
    }
    # Each install draws its own.
    assert only(render(), "Secret").doc["stringData"]["GATEWAY_METRICS_TOKEN"] != token
    given = render({"secrets": {"values": {"GATEWAY_METRICS_TOKEN": GIVEN_METRICS_TOKEN}}})
    assert only(given, "Secret").doc["stringData"]["GATEWAY_METRICS_TOKEN"] == GIVEN_METRICS_TOKEN
    # An existing Secret must hold one: the pod refers to it by name.
    env = env_of(container(render({"secrets": {"existingSecret": "tokens"}})))
    assert env["GATEWAY_METRICS_TOKEN"] == {
        "secretKeyRef": {"name": "tokens", "key": "GATEWAY_METRICS_TOKEN"}
    }
    # Turned off, /metrics is open and the scrape sends nothing.
    opened = render({"metrics": {"requireToken": False}})
    assert only(opened, "Secret").doc["stringData"]["GATEWAY_METRICS_TOKEN"] == ""
    assert "authorization" not in only(opened, "ServiceMonitor").doc["spec"]["endpoints"][0]


def test_notes_tell_how_to_reach_the_gateway_and_warn_about_missing_tokens() -> None:
    notes = chart.render_raw()["profile-gateway/templates/NOTES.txt"]
    assert "port-forward svc/gw-profile-gateway" in notes
    assert "GATEWAY_API_TOKENS is empty" in notes
    assert "SQLite" in notes
    pg_notes = chart.render_raw(chart.postgresql_values())["profile-gateway/templates/NOTES.txt"]
    assert "PostgreSQL" in pg_notes and "migrate" in pg_notes
    assert "GATEWAY_API_TOKENS is empty" not in pg_notes


# --- Credentials as files ------------------------------------------------------


def kubelet_files(
    manifests: list[Manifest], secrets: dict[str, dict[str, str]], root: Path
) -> None:
    """What the kubelet would put in the Deployment's `secrets` volume, under
    `root`: each item of each projected Secret (`secrets`: name -> its data)."""
    for name, items in secret_sources(only(manifests, "Deployment")).items():
        for item in items:
            (root / item["path"]).write_text(secrets[name][item["key"]])


def test_the_mounted_files_are_what_the_gateway_reads(tmp_path: Path) -> None:
    """The chart's Secret as the kubelet mounts it, the container's environment
    as the chart sets it: Settings.from_env gets every credential."""
    values: dict[str, Any] = {
        "secrets": {
            "values": {
                "GATEWAY_API_TOKENS": SCOPED,
                "GATEWAY_OMNEO_TOKEN": "omneo-token",
                "GATEWAY_METRICS_TOKEN": GIVEN_METRICS_TOKEN,
            }
        },
        "config": {"GATEWAY_OMNEO_URL": "https://omneo.example/api"},
    }
    manifests = render(values)
    secret = only(manifests, "Secret")
    kubelet_files(manifests, {secret.name: secret.doc["stringData"]}, tmp_path)
    env = {
        k: str(v).replace(SECRETS_DIR, str(tmp_path))
        for k, v in env_of(container(manifests)).items()
    }
    env["GATEWAY_DATABASE_URL"] = f"sqlite:///{tmp_path / 'g.db'}"
    settings = Settings.from_env(env | values["config"])
    assert settings.api_tokens == SCOPED
    assert settings.omneo_token == "omneo-token"
    assert settings.metrics_token == GIVEN_METRICS_TOKEN
    assert settings.encryption_keys == chart.TEST_ENCRYPTION_KEYS
    assert settings.ocamba_token == ""


def test_postgresql_reads_its_url_and_the_existing_secrets_keys_as_files(tmp_path: Path) -> None:
    values = chart.postgresql_values()
    manifests = render(values)
    url = "postgresql://gateway:pw@postgres.db.svc:5432/gateway"
    tokens = {k: "" for k in values["secrets"]["existingSecretKeys"]}
    tokens |= {"GATEWAY_API_TOKENS": CRM, "GATEWAY_METRICS_TOKEN": GIVEN_METRICS_TOKEN}
    tokens |= {
        "GATEWAY_ENCRYPTION_KEYS": chart.TEST_ENCRYPTION_KEYS,
        "GATEWAY_OCAMBA_TOKEN": "o",
        "GATEWAY_OMNEO_TOKEN": "o",
        "GATEWAY_IMPORT_BATCH_TOKEN": "i",
    }
    kubelet_files(
        manifests,
        {"profile-gateway-db": {"uri": url + "\n"}, "profile-gateway-tokens": tokens},
        tmp_path,
    )
    env = {
        k: str(v).replace(SECRETS_DIR, str(tmp_path))
        for k, v in env_of(container(manifests)).items()
    }
    settings = Settings.from_env(env | {k: str(v) for k, v in values["config"].items()})
    assert settings.database_url == url  # the trailing newline stripped
    assert settings.api_tokens == CRM and settings.metrics_token == GIVEN_METRICS_TOKEN


def test_an_existing_secret_gets_the_required_keys_mounted_too() -> None:
    keys = ["GATEWAY_API_TOKENS"]
    values = {"secrets": {"existingSecret": "tokens", "existingSecretKeys": keys}}
    manifests = render(values)
    mounted = [i["key"] for i in secret_sources(only(manifests, "Deployment"))["tokens"]]
    # Required: a key missing from the Secret keeps the pod from starting, as
    # the secretKeyRef entries do when the Secret goes in as variables.
    assert mounted == ["GATEWAY_API_TOKENS", "GATEWAY_ENCRYPTION_KEYS", "GATEWAY_METRICS_TOKEN"]
    env = env_of(container(manifests))
    assert "GATEWAY_ENCRYPTION_KEYS" not in env and "GATEWAY_METRICS_TOKEN" not in env
    assert container(manifests)["envFrom"] == [{"configMapRef": {"name": "gw-profile-gateway"}}]
    relaxed = merged(values, {"allowPlaintext": True, "metrics": {"requireToken": False}})
    relaxed_manifests = render(relaxed, keys=False)
    mounted = [i["key"] for i in secret_sources(only(relaxed_manifests, "Deployment"))["tokens"]]
    assert mounted == ["GATEWAY_API_TOKENS"]


def test_credentials_go_in_as_variables_when_asked_or_when_the_keys_are_unknown() -> None:
    for values in (
        {"secrets": {"asFiles": False}},
        merged(chart.postgresql_values(), {"secrets": {"asFiles": False}}),
        {"secrets": {"existingSecret": "tokens"}},  # keys not named: the chart cannot see them
    ):
        manifests = render(values)
        c = container(manifests)
        secret_name = values["secrets"].get("existingSecret") or "gw-profile-gateway"
        assert {"secretRef": {"name": secret_name}} in c["envFrom"]
        assert not [n for n in env_of(c) if n.endswith("_FILE") and n != "GATEWAY_MAPPING_FILE"]
        if values["secrets"].get("asFiles") is False:
            assert secret_sources(only(manifests, "Deployment")) == {}
    pg = render(merged(chart.postgresql_values(), {"secrets": {"asFiles": False}}))
    assert env_of(container(pg))["GATEWAY_DATABASE_URL"] == {
        "secretKeyRef": {"name": "profile-gateway-db", "key": "uri"}
    }
    assert "volumes" not in only(pg, "Job").doc["spec"]["template"]["spec"] or all(
        v["name"] != "secrets" for v in only(pg, "Job").doc["spec"]["template"]["spec"]["volumes"]
    )


def test_the_secret_files_are_readable_by_the_pods_group_only() -> None:
    def mode(values: dict[str, Any]) -> int:
        spec = only(render(values), "Deployment").doc["spec"]["template"]["spec"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "secrets"]
        return int(volume["projected"]["defaultMode"])

    assert mode({}) == 0o440  # group-readable: the files' group is the pod's fsGroup
    no_fs_group = {"podSecurityContext": {"fsGroup": None, "fsGroupChangePolicy": None}}
    assert mode(no_fs_group) == 0o444  # else root's files, unreadable to user 10001


# --- NetworkPolicy, image digest, namespace ------------------------------------


def test_no_network_policy_unless_enabled() -> None:
    assert "NetworkPolicy" not in chart.kinds(render())
    assert "NetworkPolicy" not in chart.kinds(render(chart.postgresql_values()))


def test_the_network_policy_admits_the_named_namespaces_and_reaches_what_the_gateway_needs() -> (
    None
):
    manifests = render(VALUE_SETS[HARDENED_POSTGRESQL])
    policies = {m.name: m.doc["spec"] for m in manifests if m.kind == "NetworkPolicy"}
    gateway, migrate = policies["gw-profile-gateway"], policies["gw-profile-gateway-migrate"]
    deploy = only(manifests, "Deployment").doc
    job = only(manifests, "Job").doc
    assert gateway["podSelector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert migrate["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert not gateway["podSelector"]["matchLabels"].items() <= pod_labels.items()
    for spec in (gateway, migrate):
        assert spec["policyTypes"] == ["Ingress", "Egress"]
    # In: the named namespaces, on the gateway's port only; nothing to the migration.
    (rule,) = gateway["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        for ns in ("crm", "monitoring")
    ]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert "ingress" not in migrate
    # Out: DNS, the database, and (the gateway only) the backends on 443.
    dns = {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
    }
    database = {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}},
                "podSelector": {"matchLabels": {"cnpg.io/cluster": "pg"}},
            }
        ],
        "ports": [{"port": 5432, "protocol": "TCP"}],
    }
    backends = {
        "to": [
            {
                "ipBlock": {
                    "cidr": "0.0.0.0/0",
                    "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                }
            }
        ],
        "ports": [{"port": 443, "protocol": "TCP"}],
    }
    assert gateway["egress"] == [dns, database, backends]
    assert migrate["egress"] == [dns, database]


def test_the_network_policy_takes_cidrs_ports_and_extra_rules() -> None:
    values = merged(
        chart.postgresql_values(),
        {
            "networkPolicy": {
                "enabled": True,
                "ingress": {"from": [{"podSelector": {"matchLabels": {"app": "ingress"}}}]},
                "egress": {
                    "dns": {"namespace": "", "podLabels": None},
                    "backends": [{"cidr": "203.0.113.0/24", "ports": [443, 8443]}],
                    "database": {"cidrs": ["10.1.2.3/32"], "port": 6432},
                    "extra": [{"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}],
                },
            }
        },
    )
    manifests = render(values)
    (gateway,) = [
        m.doc["spec"]
        for m in manifests
        if m.name == "gw-profile-gateway" and m.kind == "NetworkPolicy"
    ]
    assert gateway["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"app": "ingress"}}}]
    dns, database, backend, extra = gateway["egress"]
    assert "to" not in dns and dns["ports"][0]["port"] == 53  # port 53 anywhere
    assert database == {
        "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
        "ports": [{"port": 6432, "protocol": "TCP"}],
    }
    assert backend == {
        "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 8443, "protocol": "TCP"}],
    }
    assert extra == {"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}
    assert all(e == [] for m in manifests for e in [list(chart.validation_errors(m))])


def test_the_network_policy_refuses_to_shut_everything_out() -> None:
    err = schema_error({"networkPolicy": {"enabled": True}})
    assert "networkPolicy.ingress.namespaces" in err and "nothing could reach" in err
    err = schema_error(
        merged(
            chart.postgresql_values(),
            {"networkPolicy": {"enabled": True, "ingress": {"namespaces": ["crm"]}}},
        )
    )
    assert "networkPolicy.egress.database" in err and "PostgreSQL" in err


def test_the_image_by_digest() -> None:
    digest = "sha256:" + "a" * 64
    manifests = render(merged(chart.postgresql_values(), {"image": {"digest": digest, "tag": "x"}}))
    assert container(manifests)["image"] == f"profile-gateway@{digest}"
    assert container(manifests, "Job")["image"] == f"profile-gateway@{digest}"
    assert container(render())["image"] == "profile-gateway:0.1.0"


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_object_is_in_the_release_namespace(name: str) -> None:
    for m in render(VALUE_SETS[name]):
        assert m.doc["metadata"]["namespace"] == chart.NAMESPACE, f"{m.kind}/{m.name}"
    other = render(VALUE_SETS[name], namespace="elsewhere")
    assert {m.doc["metadata"]["namespace"] for m in other} == {"elsewhere"}
