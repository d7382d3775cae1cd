"""`gateway mapping check|show|preview`, in process."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pytest

from gateway import cli_mapping
from gateway.__main__ import build_parser, main
from gateway.config import Settings
from gateway.demo import DEMO_TOKEN
from tests.servers import free_base_port, free_port
from tests.test_cli import running, wait_for_port

EXAMPLE = str(Path(__file__).parent.parent.parent / "docs" / "mapping.example.toml")


def run(*argv: str, stdin: str = "", settings: Settings | None = None) -> tuple[int, str, str]:
    args = build_parser().parse_args(["mapping", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = cli_mapping.main(
        settings or Settings(), args, stdin=io.StringIO(stdin), out=out, err=err
    )
    return code, out.getvalue(), err.getvalue()


def test_check_exits_0_for_a_good_file_and_2_with_every_problem(tmp_path: Path) -> None:
    assert run("check", EXAMPLE) == (0, f"{EXAMPLE}: ok\n", "")
    bad = tmp_path / "bad.toml"
    bad.write_text('[ocamba]\nexclude = ["phon"]\n[omneo]\nnamespace = "x"\n')
    code, out, err = run("check", str(bad))
    assert (code, out) == (2, "")
    assert [line.split(": ")[1] for line in err.splitlines()] == [
        "ocamba.exclude[0]",
        "omneo.namespace",
    ]


def test_check_accepts_resend_per_backend_and_refuses_a_non_boolean(tmp_path: Path) -> None:
    good = tmp_path / "resend.toml"
    good.write_text(
        "[omneo]\nresend = true\n[ocamba]\nresend = false\n[import_batch]\nresend = true\n"
    )
    assert run("check", str(good)) == (0, f"{good}: ok\n", "")
    bad = tmp_path / "bad.toml"
    bad.write_text('[omneo]\nresend = "yes"\n')
    code, _, err = run("check", str(bad))
    assert code == 2 and "omneo.resend" in err


def test_check_reads_gateway_mapping_file_when_no_file_is_named() -> None:
    code, out, _ = run("check", settings=Settings(mapping_file=EXAMPLE))
    assert (code, out) == (0, f"{EXAMPLE}: ok\n")


def test_show_prints_the_resolved_mapping_with_defaults_filled_in() -> None:
    code, out, _ = run("show", EXAMPLE)
    shown = json.loads(out)
    assert code == 0
    assert shown["source"] == EXAMPLE
    assert shown["import_batch"]["fields"]["first_name"] == "_fname"
    assert shown["ocamba"]["exclude"] == ["phone"]


def test_preview_exits_1_with_the_reason_when_the_backend_would_not_be_sent_it() -> None:
    phone_only = json.dumps({"external_id": "x", "phone": "+61412345678"})
    code, out, err = run("preview", "--backend", "ocamba", EXAMPLE, stdin=phone_only)
    assert (code, out) == (1, "")
    assert err == (
        "ocamba would not be sent this profile: Ocamba needs an email or a mobile phone"
        " number to create a profile\n"
    )


def test_preview_with_a_backend_id_sends_only_the_import() -> None:
    profile = json.dumps({"external_id": "x", "attributes": {"signup": "2024-01-15"}})
    code, out, _ = run(
        "preview", "--backend", "ocamba", "--backend-id", "77", EXAMPLE, stdin=profile
    )
    assert code == 0
    head, _, body = out.partition("\n")
    assert head == "POST /v1/hood/profiles/import"
    assert json.loads(body) == {
        "profiles": [
            {"id": "77", "custom_properties": {"signup": {"type": "string", "value": "2024-01-15"}}}
        ]
    }


def test_preview_refuses_a_profile_the_api_would_refuse() -> None:
    code, out, err = run(
        "preview", "--backend", "omneo", stdin='{"external_id": "x", "email": "no"}'
    )
    assert (code, out) == (2, "")
    assert err == "stdin: email: not a valid email address\n"
    code, _, err = run("preview", "--backend", "omneo", stdin="{")
    assert code == 2 and err.startswith("stdin: not JSON")


def test_demo_refuses_a_bad_mapping_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[ocamba]\nexclude = 'phone'\n")
    database = tmp_path / "demo.db"
    assert main(["demo", "--mapping", str(bad), "--database", str(database)]) == 2
    assert capsys.readouterr().err == (
        f"{bad}: ocamba.exclude: must be an array of strings, not a string\n"
    )
    assert not database.exists()


def test_demo_with_the_example_mapping_delivers_to_every_backend(tmp_path: Path) -> None:
    # The demo's import_batch database must have the fields the file sends
    # (CRM_ID, its field_name, and Tier), or import_batch refuses the profile.
    port, sims = free_port(), free_base_port()
    args = ["demo", "--port", str(port), "--sim-base-port", str(sims), "--mapping", EXAMPLE]
    with running(args, tmp_path) as proc:
        wait_for_port(port, proc)
        auth = {"Authorization": f"Bearer {DEMO_TOKEN}"}
        base = f"http://127.0.0.1:{port}"
        profile = {
            "external_id": "demo-1",
            "email": "jane@example.com",
            "attributes": {"tier": "gold", "since": "2021-04-01"},
        }
        assert httpx.post(f"{base}/v1/profiles", json=profile, headers=auth).status_code == 202
        deadline = time.monotonic() + 20
        while True:
            backends = httpx.get(f"{base}/v1/profiles/demo-1", headers=auth).json()["backends"]
            states = {b: (d["state"], d["last_error"]) for b, d in backends.items()}
            if {b: s for b, (s, _) in states.items()} == {
                "ocamba": "accepted",
                "omneo": "confirmed",
                "import_batch": "confirmed",
            }:
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.1)
        received = httpx.get(f"http://127.0.0.1:{sims + 2}/_sim/received").json()
        [data] = [item["body"]["data"][0] for item in received if item["status"] < 300]
        assert (data["CRM_ID"], data["Tier"]) == ("demo-1", "gold")
