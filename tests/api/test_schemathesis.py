"""Schemathesis against the gateway's own /openapi.json, over real HTTP on 127.0.0.1.

Every documented operation gets Schemathesis' coverage phase (boundary and
negative values for every keyword of the schema) and its fuzzing phase
(positive and negative Hypothesis data), and a stateful run follows the
document's links (write, then read the request and the profile back). Every
response must be no 5xx, a documented status with the documented content type
and body, and 401 without the token; schema-valid data may be refused only by
the rules the schema cannot express (see `documented_rules_only`).

The run is derandomized, so CI sees the same cases each time. The figures of a
run are written at the end of the module (pytest -s shows them, and README.md
quotes them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from gateway.api.openapi import build_openapi
from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import AUTH, TOKEN
from tests.servers import free_port, serve
from tests.tokens import entry

Case = schemathesis.Case[Any]
SECRET = "fuzz-webhook-secret"
SIGNATURE_HEADER = "X-Omneo-Hmac-SHA256"
# Per operation and Schemathesis phase; about 60 s of CI on two cores in all.
MAX_EXAMPLES = 200
STATEFUL_EXAMPLES = 30
# What the whole module must have run, so a quietly shrinking run is noticed.
MIN_TOTAL_CASES = 2000

# Refusals of schema-valid data that are documented rules JSON Schema cannot
# state (operation descriptions in gateway/api/openapi.py).
SEMANTIC_RULES = (
    "not a valid phone number",
    "duplicate of profiles[",
    "Ocamba accepts at most",
    "integer beyond",
    "must not contain",
    # JSON Schema counts 5.0 as an integer; the gateway, like most typed
    # decoders, wants an id without a fraction.
    "got `float`",
)

OPERATIONS = [
    f"{method.upper()} {path}" for path, ops in build_openapi()["paths"].items() for method in ops
]

cases: Counter[str] = Counter()
statuses: Counter[tuple[str, int]] = Counter()


# Chosen at import: the schema below is built then, and must know where to send.
PORT = free_port()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db: Path = tmp_path_factory.mktemp("schemathesis") / "gateway.db"
    settings_ = Settings(
        database_url=f"sqlite:///{db}",
        api_tokens=entry("crm", TOKEN),
        ocamba_url="http://127.0.0.1:9",
        omneo_url="http://127.0.0.1:9",
        import_batch_url="http://127.0.0.1:9",
        omneo_webhook_secret=SECRET,
        omneo_webhook_signature_header=SIGNATURE_HEADER,
        # Deliveries stay where the API left them; nothing leaves 127.0.0.1.
        dispatcher_enabled=False,
        # Schemathesis tries wrong credentials on purpose, many times.
        auth_failure_limit=0,
    )
    with serve(create_app(settings_), PORT) as url:
        yield url
    _report()


# schemathesis' fixture-based loader does not run under pytest 9 (it sets a
# private attribute pytest dropped), so the document is built here, from the same
# function the app serves it from; `test_the_served_document_is_the_one_tested`
# checks the two agree.
DOCUMENT = build_openapi(SIGNATURE_HEADER)
schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {
            "base-url": f"http://127.0.0.1:{PORT}",
            "headers": dict(AUTH),
            "generation": {"database": "none"},
            "checks": {
                # Replaced by `documented_rules_only`, which knows the rules the
                # document states in words.
                "positive_data_acceptance": {"enabled": False},
            },
        }
    ),
)


def test_the_served_document_is_the_one_tested(base_url: str) -> None:
    served = httpx.get(f"{base_url}/openapi.json", headers=AUTH)
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(DOCUMENT))
    assert httpx.get(f"{base_url}/openapi.json").status_code == 401


def documented_rules_only(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Case
) -> bool | None:
    """Schema-valid data gets 2xx, or 409/404, or a 422 naming only a documented
    semantic rule; any other refusal means the document says less than the app."""
    assert case.meta is not None
    if not case.meta.generation.mode.is_positive or response.status_code < 400:
        return None
    if response.status_code in (401, 404, 409):
        return None
    if response.status_code == 422:
        body = json.loads(response.content)
        messages = [e["message"] for e in body.get("errors", [])] or [body["message"]]
        if all(any(rule in m for rule in SEMANTIC_RULES) for m in messages):
            return None
    raise AssertionError(
        f"schema-valid data refused with {response.status_code}: {response.text[:500]}"
    )


def _sign(case: Case) -> dict[str, str]:
    """The webhook signature of the exact bytes `requests` will send for `case`."""
    kwargs = case.as_transport_kwargs()
    if "json" in kwargs:
        raw = json.dumps(kwargs["json"], allow_nan=False).encode()
    else:
        data = kwargs.get("data", b"")
        raw = data if isinstance(data, bytes) else str(data).encode()
    return {SIGNATURE_HEADER: hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()}


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_keeps_to_its_document(base_url: str, case: Case) -> None:
    headers = dict(AUTH)
    # The generated signature is random; where a case carries one, make it right,
    # so cases reach the store. Negative cases that drop it stay unsigned (401).
    if SIGNATURE_HEADER in (case.headers or {}):
        headers.update(_sign(case))
    response = case.call(headers=headers)
    cases[case.operation.label] += 1
    statuses[(case.operation.label, response.status_code)] += 1
    case.validate_response(response, headers=headers, additional_checks=[documented_rules_only])


def test_stateful_links_hold(base_url: str) -> None:
    machine = schema.as_state_machine()

    class Counted(machine):  # type: ignore[valid-type,misc]
        def before_call(self, case: Case) -> None:
            cases[f"stateful {case.operation.label}"] += 1

        def get_call_kwargs(self, case: Case) -> dict[str, object]:
            # Named explicitly, so the auth checks know the token was the caller's.
            return {"headers": dict(AUTH)}

    run_state_machine_as_test(
        Counted,
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    assert any(label.startswith("stateful GET /v1/requests/") for label in cases)


def test_every_operation_was_tested() -> None:
    """Runs after the generated tests of this module (pytest keeps file order)."""
    missing = [op for op in OPERATIONS if cases[op] == 0]
    if len(missing) == len(OPERATIONS):
        return  # the generated tests were deselected (-k): nothing to total
    assert missing == []
    assert sum(cases.values()) >= MIN_TOTAL_CASES
    # Webhook cases are signed, so some get past the signature to the store.
    assert statuses[("POST /v1/webhooks/omneo/{event}", 200)] > 0


def _report() -> None:
    total = sum(cases.values())
    lines = [f"schemathesis: {total} cases"]
    lines += [f"  {n:6d}  {label}" for label, n in sorted(cases.items())]
    by_status = Counter(status for (_, status), n in statuses.items() for _ in range(n))
    lines.append("  statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items())))
    print("\n".join(lines), file=sys.stderr)
