"""The image itself, built from the Dockerfile by buildah (see image.py), then
inspected, opened and run: `gateway serve` as uid 10001 answers /livez and
/readyz, stores a write on /data, passes its own HEALTHCHECK, and shuts down
gracefully on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy import image as img
from tests.servers import free_port
from tests.tokens import api_token

CI_TOKEN = api_token("ci")


@pytest.fixture(scope="module")
def built() -> Iterator[img.BuiltImage]:
    img.require_tools()
    tag = f"localhost/profile-gateway:ci-{os.getpid()}"
    result = img.build(tag)
    try:
        yield result
    finally:
        img.remove(tag)


def inspect(tag: str) -> dict[str, Any]:
    data = json.loads(img.buildah("inspect", "--type", "image", tag).stdout)
    assert isinstance(data, dict)
    return data


def test_image_config_runs_gateway_serve_as_non_root(built: img.BuiltImage) -> None:
    data = inspect(built.tag)
    config = data["Docker"]["config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] + config["Cmd"] == ["gateway", "serve"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["WorkingDir"] == "/data" and "/data" in config["Volumes"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    assert env["GATEWAY_DATABASE_URL"] == "sqlite:////data/gateway.db"
    health = config["Healthcheck"]
    assert health["Test"][0] == "CMD" and "/livez" in " ".join(health["Test"])
    assert config.get("StopSignal") == "SIGTERM"


def test_image_holds_the_virtualenv_and_no_build_tools(built: img.BuiltImage) -> None:
    container = img.buildah("from", "--quiet", built.tag).stdout.strip()
    try:
        root = Path(img.buildah("mount", container).stdout.strip())
        venv = root / "opt/gateway"
        assert (venv / "bin/gateway").exists()
        site = next((venv / "lib").glob("python3*/site-packages"))
        for engine in ("sqlite", "postgres"):
            store = site / "gateway/store" / engine
            assert list((store / "migrations").glob("*.sql")), f"{engine} migrations missing"
            assert list((store / "queries").glob("*.sql")), f"{engine} queries missing"
        # The tracing extra: OTEL_* turns traces on without another image.
        assert (site / "opentelemetry/sdk").is_dir()
        assert (site / "opentelemetry/exporter/otlp/proto/http").is_dir()
        for absent in ("bin/pip", "bin/pip3"):
            assert not (venv / absent).exists(), absent
        assert not list(site.glob("pip")) and not list(site.glob("setuptools"))
        for tool in ("usr/bin/gcc", "usr/bin/cc", "usr/bin/make", "usr/bin/git"):
            assert not (root / tool).exists(), tool
        assert not (root / "src").exists(), "the build stage's source tree leaked"
        for leaked in ("tests", "helm", "bench"):
            assert not (site / leaked).exists(), leaked
        data = (root / "data").stat()
        assert (data.st_uid, data.st_gid) == (10001, 10001)
    finally:
        img.buildah("rm", container, check=False)


def test_image_serves_stores_passes_its_healthcheck_and_stops_gracefully(
    built: img.BuiltImage, tmp_path: Path
) -> None:
    config = inspect(built.tag)["Docker"]["config"]
    port = free_port()
    container = img.buildah("from", "--quiet", built.tag).stdout.strip()
    env = ["--env", "GATEWAY_HOST=127.0.0.1", "--env", f"GATEWAY_PORT={port}"]
    env += ["--env", f"GATEWAY_API_TOKENS=ci:{CI_TOKEN}"]
    log = tmp_path / "container.log"
    run = img.buildah_argv("run", "--isolation", "chroot", "--network", "host", *env, container)
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*run, "--", *config["Entrypoint"], *config["Cmd"]],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert httpx.get(f"{base}/livez").json() == {"status": "ok"}
        answer = httpx.post(
            f"{base}/v1/profiles",
            json={"external_id": "img-1", "email": "img@example.com"},
            headers={"Authorization": f"Bearer {CI_TOKEN}"},
        )
        assert answer.status_code == 202, answer.text

        # The image's own HEALTHCHECK command, from a second container of the image
        # on the same (host) network, as the runtime would exec it.
        health = config["Healthcheck"]["Test"][1:]
        probe = img.buildah("from", "--quiet", built.tag).stdout.strip()
        try:
            checked = img.buildah(
                "run", "--isolation", "chroot", "--network", "host", *env, probe, "--", *health
            )
            assert checked.returncode == 0
        finally:
            img.buildah("rm", probe, check=False)
        # The gateway's Python (not buildah's chroot helper that forks it) runs as 10001.
        inner = [p for p in img.descendants(proc.pid) if img.is_gateway_python(img.cmdline(p))]
        assert inner, log.read_text()
        assert all(Path(f"/proc/{p}").stat().st_uid == 10001 for p in inner)
        # It holds the SQLite file (the image's /data volume) open, and owns it.
        status = httpx.get(
            f"{base}/v1/requests/{answer.json()['request_id']}",
            headers={"Authorization": f"Bearer {CI_TOKEN}"},
        )
        assert status.status_code == 200 and status.json()["profiles"][0]["external_id"] == "img-1"
        fds = [fd for p in inner for fd in Path(f"/proc/{p}/fd").iterdir()]
        dbs = [fd for fd in fds if os.readlink(fd).endswith("/data/gateway.db")]
        assert dbs, [os.readlink(fd) for fd in fds]
        assert all(fd.stat().st_uid == 10001 for fd in dbs)  # stat through the fd link

        # SIGTERM, as the kubelet sends it: uvicorn drains, the lifespan shuts down.
        for pid in inner:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while "Application shutdown complete" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        img.buildah("rm", container, check=False)
