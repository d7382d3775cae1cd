"""README.md documents every setting and the two set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.config import describe

README = (Path(__file__).parent.parent / "README.md").read_text()


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
