"""`gateway serve` with docs/mapping.example.toml, `gateway simulate` beside it,
all over real HTTP: what each simulator receives is exactly what
`gateway mapping preview` printed for the same profile, and a file with five
kinds of mistakes stops `gateway serve` with five lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.conftest import AUTH
from tests.e2e.test_graceful_shutdown import process, simulator_env, wait_ready
from tests.servers import free_base_port, free_port

EXAMPLE = Path(__file__).parent.parent.parent / "docs" / "mapping.example.toml"
SECRET = "mapping-serve-secret"
JANE = {
    "external_id": "cust-42",
    "email": "Jane@Example.com",
    "phone": "+61 412 345 678",
    "first_name": "Jane",
    "last_name": "Doe",
    "birth_date": "1990-02-28",
    "attributes": {"tier": "gold", "order_no": "20240101", "signup": "2024-01-15"},
    "consents": {"email": True, "sms": False},
}
BAD = """\
[import_batch]
skip_trigers = true
[import_batch.fields]
birth_dat = "_bdate"
"attributes.code" = "subscriptions"
[ocamba.attribute_types]
tier = "text"
[omneo]
attribute_namespace = 7
"""


def preview(backend: str, base_url: str) -> list[tuple[str, Any]]:
    """(path, body) of each request `gateway mapping preview` prints, the path
    under `base_url` (the backend's URL the gateway is given: Omneo's and
    import_batch's end in `/api`)."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "mapping", "preview", "--backend", backend, str(EXAMPLE)],
        input=json.dumps(JANE),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    requests: list[tuple[str, Any]] = []
    decoder = json.JSONDecoder()
    text = done.stdout
    while text.strip():
        line, _, text = text.lstrip().partition("\n")
        assert line.startswith("POST "), done.stdout
        body, end = decoder.raw_decode(text.lstrip())
        text = text.lstrip()[end:]
        requests.append((urlsplit(base_url).path + line.removeprefix("POST "), body))
    return requests


def received(port: int) -> list[tuple[str, Any]]:
    """What the simulator on `port` took; `/_sim/*` is at its root."""
    items = httpx.get(f"http://127.0.0.1:{port}/_sim/received", timeout=5).json()
    return [(item["path"], item["body"]) for item in items if item["status"] < 300]


def test_serve_sends_each_backend_exactly_what_preview_prints(tmp_path: Path) -> None:
    base, port = free_base_port(3), free_port()
    sim_log, gw_log = tmp_path / "sim.log", tmp_path / "gateway.log"
    sim_args = [
        "simulate",
        f"--ocamba-port={base}",
        f"--omneo-port={base + 1}",
        f"--import-batch-port={base + 2}",
        f"--webhook-base-url=http://127.0.0.1:{port}",
        f"--webhook-secret={SECRET}",
        # The database the example file is written for: its CRM_ID and Tier,
        # and the attributes JANE sends under their own names.
        "--import-batch-fields=CRM_ID,Tier,order_no,signup",
    ]
    with process(sim_args, {}, sim_log):
        sims = simulator_env(sim_log)
        env = {
            **sims,
            "GATEWAY_OMNEO_WEBHOOK_SECRET": SECRET,
            "GATEWAY_API_TOKENS": f"crm:{AUTH['Authorization'].split()[1]}",
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
            "GATEWAY_PORT": str(port),
            "GATEWAY_BATCH_LINGER": "0.05",
            "GATEWAY_MAPPING_FILE": str(EXAMPLE),
        }
        with process(["serve"], env, gw_log) as gateway:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, gateway, gw_log)
            answer = httpx.post(f"{url}/v1/profiles", json=JANE, headers=AUTH, timeout=10)
            assert answer.status_code == 202, answer.text
            rid = answer.json()["request_id"]
            states = wait_settled(url, rid)
            assert states == {
                "ocamba": "accepted",
                "omneo": "confirmed",  # its webhook found the delivery by crm_id
                "import_batch": "confirmed",
            }

            [(create_path, create), (import_path, imported)] = received(base)
            ocamba_id = imported["profiles"][0]["id"]
            expected = preview("ocamba", sims["GATEWAY_OCAMBA_URL"])
            expected[1][1]["profiles"][0]["id"] = ocamba_id
            assert [(create_path, create), (import_path, imported)] == expected

            [(omneo_path, batch)] = received(base + 1)
            expected = preview("omneo", sims["GATEWAY_OMNEO_URL"])
            expected[0][1]["import_job_id"] = batch["import_job_id"]  # from delivery ids
            assert [(omneo_path, batch)] == expected

            [(ib_path, ib_body)] = received(base + 2)
            expected = preview("import_batch", sims["GATEWAY_IMPORT_BATCH_URL"])
            expected[0][1]["token"] = sims["GATEWAY_IMPORT_BATCH_TOKEN"]
            assert [(ib_path, ib_body)] == expected


def wait_settled(url: str, rid: str) -> dict[str, str]:
    """State per backend once none is open any more and Omneo's webhook had its
    chance to confirm (or 30 s passed)."""
    final = ("confirmed", "failed", "dead")
    deadline = time.monotonic() + 30
    while True:
        body = httpx.get(f"{url}/v1/requests/{rid}", headers=AUTH, timeout=5).json()
        states = {d["backend"]: d["state"] for d in body["profiles"][0]["deliveries"]}
        settled = states["omneo"] in final and states["import_batch"] in final
        if (settled and states["ocamba"] in ("accepted", *final)) or time.monotonic() > deadline:
            return states
        time.sleep(0.05)


def test_serve_refuses_a_file_with_five_kinds_of_mistakes_in_five_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    env = {
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_MAPPING_FILE": str(bad),
    }
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"],
        env={**_base_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines == [
        f"{bad}: import_batch.skip_trigers: unknown key (did you mean skip_triggers?);"
        " known: matching, field_name, resource_id, skip_triggers, skip_invalid_subscriptions,"
        " detect_geo, exclude, fields, subscriptions, unmapped_attributes, resend",
        f"{bad}: import_batch.fields.birth_dat: unknown normalized field 'birth_dat'"
        " (did you mean birth_date?); use attributes.NAME, identities.HANDLE or one of"
        " birth_date, company, country_code, email, external_id, first_name, full_name,"
        " gender, language, last_name, occupation, phone, title",
        f"{bad}: import_batch.fields.\"attributes.code\": 'subscriptions' is a field the"
        " gateway sets itself",
        f"{bad}: ocamba.attribute_types.tier: type 'text' is not one Ocamba takes:"
        " boolean, date, number, string",
        f"{bad}: omneo.attribute_namespace: must be a string, not an integer",
    ]
    assert done.stdout == ""
    assert not (tmp_path / "gw.db").exists()  # stopped before opening anything


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
