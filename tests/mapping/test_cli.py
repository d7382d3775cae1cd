"""`gateway mapping check|show|preview`, in process."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from gateway import cli_mapping
from gateway.__main__ import build_parser, main
from gateway.config import Settings

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
            {"id": "77", "custom_properties": {"signup": {"type": "date", "value": "2024-01-15"}}}
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
