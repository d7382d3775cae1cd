"""README.md documents every setting and the two set-up commands."""

from __future__ import annotations

import io
import re
from pathlib import Path

from gateway import cli_mapping
from gateway.__main__ import build_parser
from gateway.config import Settings, describe

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"GATEWAY_[A-Z_]+", README))
    # Rows like `GATEWAY_OCAMBA_RATE_PER_SECOND` / `_PER_MINUTE` name two settings.
    for prefix, suffix in re.findall(r"`(GATEWAY_[A-Z_]+?)_PER_SECOND` / `(_PER_MINUTE)`", README):
        documented.add(prefix + suffix)
    missing = [var for var, _ in describe() if var not in documented]
    assert missing == []


def test_the_two_setup_commands_come_first() -> None:
    head = README[: README.index("## The API")]
    assert "./scripts/demo" in head and "./scripts/test" in head
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "./scripts/test" in ci


def _preview(backend: str, profile: str) -> str:
    args = build_parser().parse_args(
        ["mapping", "preview", "--backend", backend, str(ROOT / "docs" / "mapping.example.toml")]
    )
    out, err = io.StringIO(), io.StringIO()
    assert cli_mapping.main(Settings(), args, stdin=io.StringIO(profile), out=out, err=err) == 0
    return out.getvalue()


def test_the_mapping_file_section_shows_the_example_file_and_real_previews() -> None:
    example = (ROOT / "docs" / "mapping.example.toml").read_text()
    assert f"```toml\n{example}```" in README
    # The profile of "Write one profile", as its curl command sends it.
    curl = README[README.index("### Write one profile") :]
    profile = curl[curl.index("-d '") + 4 : curl.index("'\n", curl.index("-d '"))]
    for backend in ("ocamba", "omneo", "import_batch"):
        command = f"$ gateway mapping preview --backend {backend} docs/mapping.example.toml"
        shown = README[README.index(command) :]
        shown = shown[shown.index("\n") + 1 : shown.index("```")]
        assert shown == _preview(backend, profile), backend
