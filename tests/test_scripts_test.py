"""`./scripts/test` on a machine where it may not install the system tools: it
stops before any Python set-up or test, with one line naming the packages and
the command to run, and still prints its stage timings.

The script runs from a copy in a temporary folder with a PATH of our making, so
the tools look missing whatever this machine has, `id` says we are not root,
and an `apt-get` that records being called shows it never was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test"
PACKAGES = "buildah chromium chromium-driver debootstrap prometheus wrk"


def _bin(tmp_path: Path, *, apt: bool, sudo: bool) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sort", "env", "dirname", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    fakes = {"id": "echo 1000"}
    if apt:
        fakes["apt-get"] = f'echo called >> "{tmp_path}/apt-called"; exit 99'
    if sudo:
        # Passwordless sudo is not set up: `sudo -n true` fails, as it would.
        fakes["sudo"] = "exit 1"
    for name, body in fakes.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    return bin_dir


def _run(tmp_path: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, project / "scripts" / "test")
    bash = shutil.which("bash")
    assert bash
    return subprocess.run(
        [bash, str(project / "scripts" / "test")],
        env={"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/root")},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_root_or_sudo_it_names_the_packages_and_stops(tmp_path: Path) -> None:
    result = _run(tmp_path, _bin(tmp_path, apt=True, sudo=True))
    assert result.returncode == 2, result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("scripts/test:")]
    assert f"missing system packages: {PACKAGES}" in line
    assert f"sudo apt-get install -y --no-install-recommends {PACKAGES}" in line
    assert not (tmp_path / "apt-called").exists()
    # Stopped before the Python set-up: no virtualenv, no pytest.
    assert not (tmp_path / "project" / ".venv").exists()
    assert "stage timings:" in result.stderr
    assert "install: system tools (stopped)" in result.stderr


def test_without_apt_it_says_the_machine_is_not_debian(tmp_path: Path) -> None:
    result = _run(tmp_path, _bin(tmp_path, apt=False, sudo=False))
    assert result.returncode == 2, result.stderr
    assert f"missing system packages: {PACKAGES}; this is not a Debian machine" in result.stderr
    assert not (tmp_path / "project" / ".venv").exists()
