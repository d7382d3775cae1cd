"""checkov (Bridgecrew's infrastructure-as-code scanner, from PyPI) on rendered
manifests.

checkov lives in a virtualenv of its own, .venv-checkov beside .venv, not in
the project's test extras: it pins about eighty packages exactly or below their
current releases (boto3 ==, packaging < 24, networkx < 2.7, ...), so in .venv it
would downgrade what the project's tests use and make every future dependency
of the project a resolution fight with a scanner the gateway never imports. It
is run as a program, so nothing is lost by keeping it apart.

`python -m tests.deploy.checkov` makes or updates that virtualenv (scripts/test
does, before pytest); the test makes it too when it is missing, so a bare
`pytest tests/deploy/test_checkov.py` works. CHECKOV=/path/to/checkov uses
another installation instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERSION = "3.3.30"
VENV = ROOT / ".venv-checkov"
MARKER = VENV / "checkov-version"


@dataclass(frozen=True)
class Failure:
    check_id: str
    check_name: str
    resource: str


@dataclass(frozen=True)
class Report:
    passed: int
    failures: list[Failure]


def executable() -> Path:
    """The checkov program: $CHECKOV, or .venv-checkov's, installed at VERSION if
    it is not there yet."""
    given = os.environ.get("CHECKOV")
    if given:
        return Path(given)
    program = VENV / "bin" / "checkov"
    if program.exists() and MARKER.exists() and MARKER.read_text().strip() == VERSION:
        return program
    if not (VENV / "bin" / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", f"checkov=={VERSION}"],
        check=True,
        timeout=1200,
    )
    MARKER.write_text(VERSION + "\n")
    return program


def scan(directory: Path) -> Report:
    """One checkov run over the Kubernetes manifests in `directory`."""
    done = subprocess.run(
        [
            str(executable()),
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--quiet",
            "--compact",
            # Nothing from the network: no API key, no update check, no policy download.
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    # checkov exits 1 when a check fails; anything else is checkov failing.
    assert done.returncode in (0, 1), done.stderr[-2000:]
    result = json.loads(done.stdout)
    if isinstance(result, list):  # one entry per framework
        (result,) = result
    summary = result["summary"]
    failures = [
        Failure(r["check_id"], r["check_name"], r["resource"])
        for r in result["results"]["failed_checks"]
    ]
    assert summary["failed"] == len(failures)
    return Report(passed=int(summary["passed"]), failures=failures)


if __name__ == "__main__":
    print(executable(), file=sys.stderr)
