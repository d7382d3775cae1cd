"""A real Prometheus scraping a real `gateway serve`, which sends to the three
`gateway simulate` backends, all as separate processes on 127.0.0.1 - the
commands the Docker image and the chart run - plus traffic that gives every
metric data: good writes from two apps, refused ones, idempotent replays and
conflicts, Ocamba pacing (rate-limit waits, a backlog), import_batch errors
(retries, dead letters), profiles Ocamba must refuse (failed), and Omneo
webhooks half dropped with a 2 s confirm timeout (confirmations and
`unconfirmed` deliveries)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.servers import free_base_port, free_port
from tests.tokens import api_token

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
INSTALL_HINT = (
    "Debian's prometheus package is needed (it gives /usr/bin/prometheus and "
    "/usr/bin/promtool): apt-get install -y --no-install-recommends prometheus "
    "(./scripts/test does this)"
)

WEBHOOK_SECRET = "deploy-webhook-secret"
METRICS_TOKEN = api_token("deploy-metrics")
TOKENS = {"crm": api_token("crm"), "shop": api_token("shop")}
# The simulators' default credentials (gateway/simulators/runner.py).
SIM_CREDENTIALS = {
    "GATEWAY_OCAMBA_TOKEN": "ocamba-token",
    "GATEWAY_OMNEO_TOKEN": "omneo-token",
    "GATEWAY_IMPORT_BATCH_TOKEN": "import-batch-token",
    "GATEWAY_IMPORT_BATCH_DB_ID": "1",
}


def require_prometheus() -> None:
    for tool in (PROMETHEUS, PROMTOOL):
        assert os.access(tool, os.X_OK), f"{tool} is missing. {INSTALL_HINT}"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    require_prometheus()
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def start(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Process:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env={**os.environ, **(env or {})},
        )
    return Process(name, popen, log)


def wait_http(url: str, proc: Process, within: float = 20, **kwargs: Any) -> None:
    deadline = time.monotonic() + within
    while True:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}\n{proc.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1, **kwargs).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not up within {within}s\n{proc.tail()}")
        time.sleep(0.1)


def scrape_config_from_service_monitor(
    service_monitor: dict[str, Any],
    secret: dict[str, Any],
    *,
    job: str,
    namespace: str,
    targets: list[str],
) -> dict[str, Any]:
    """What the prometheus-operator makes of the chart's ServiceMonitor, for
    static targets: its path, scheme, interval, timeout and bearer token (read
    from the chart's Secret), and the `job`/`namespace` labels a scrape through
    the Service carries."""
    (endpoint,) = service_monitor["spec"]["endpoints"]
    config: dict[str, Any] = {
        "job_name": job,
        "metrics_path": endpoint["path"],
        "scheme": endpoint["scheme"],
        "scrape_interval": endpoint["interval"],
        "scrape_timeout": endpoint["scrapeTimeout"],
        "static_configs": [{"targets": targets, "labels": {"namespace": namespace}}],
    }
    auth = endpoint.get("authorization")
    if auth:
        cred = auth["credentials"]
        assert cred["name"] == secret["metadata"]["name"]
        config["authorization"] = {
            "type": auth["type"],
            "credentials": secret["stringData"][cred["key"]],
        }
    return config


@dataclass
class Stack:
    prometheus_url: str
    gateway_url: str
    workdir: Path
    processes: list[Process]
    rules_file: Path
    traffic_error: BaseException | None = None
    settle_report: list[str] = field(default_factory=list)

    def logs(self) -> str:
        report = "--- settling ---\n" + "\n".join(self.settle_report[:5] + self.settle_report[-1:])
        return report + "\n".join(p.tail() for p in self.processes)


@contextlib.contextmanager
def running_stack(
    workdir: Path, scrape_config: Callable[[list[str]], dict[str, Any]], rules: dict[str, Any]
) -> Iterator[Stack]:
    """Simulators, gateway and Prometheus, stopped on exit. `scrape_config`
    gets the targets: the gateway and a port nothing listens on (a dead pod)."""
    require_prometheus()
    sim_base = free_base_port(3)
    gw_port, prom_port, dead_port = free_port(), free_port(), free_port()
    gateway_url = f"http://127.0.0.1:{gw_port}"
    processes: list[Process] = []
    try:
        sims = start(
            "simulators",
            [
                sys.executable,
                "-m",
                "gateway",
                "simulate",
                "--ocamba-port",
                str(sim_base),
                "--omneo-port",
                str(sim_base + 1),
                "--import-batch-port",
                str(sim_base + 2),
                "--webhook-base-url",
                gateway_url,
                "--webhook-secret",
                WEBHOOK_SECRET,
                # The attributes `Traffic` sends are fields of the simulated database.
                "--import-batch-fields",
                "external_id,tier,visits",
            ],
            workdir,
        )
        processes.append(sims)
        for port in (sim_base, sim_base + 1, sim_base + 2):
            wait_http(f"http://127.0.0.1:{port}/_sim/faults", sims)

        env = {
            **SIM_CREDENTIALS,
            "GATEWAY_OCAMBA_URL": f"http://127.0.0.1:{sim_base}",
            "GATEWAY_OMNEO_URL": f"http://127.0.0.1:{sim_base + 1}/api",
            "GATEWAY_IMPORT_BATCH_URL": f"http://127.0.0.1:{sim_base + 2}/api",
            "GATEWAY_OMNEO_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GATEWAY_API_TOKENS": ",".join(f"{app}:{tok}" for app, tok in TOKENS.items()),
            "GATEWAY_METRICS_TOKEN": METRICS_TOKEN,
            # Every round sends a wrong token on purpose, from one address.
            "GATEWAY_AUTH_FAILURE_LIMIT": "0",
            "GATEWAY_DATABASE_URL": f"sqlite:///{workdir / 'gateway.db'}",
            # Short, so that `unconfirmed`, retries and dead letters happen in seconds.
            "GATEWAY_OMNEO_CONFIRM_TIMEOUT": "2",
            "GATEWAY_MAX_ATTEMPTS": "2",
            "GATEWAY_RETRY_BASE": "0.05",
            "GATEWAY_RETRY_CAP": "0.2",
            "GATEWAY_BATCH_LINGER": "0.05",
            "GATEWAY_BACKEND_TIMEOUT": "2",
            # Slow Ocamba pacing: rate-limit waits and a backlog with an age.
            "GATEWAY_OCAMBA_RATE_PER_SECOND": "2",
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_SHUTDOWN_DELAY": "0",  # no load balancer to wait for
            "GATEWAY_SHUTDOWN_GRACE": "2",
        }
        gateway = start(
            "gateway",
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(gw_port),
            ],
            workdir,
            env,
        )
        processes.append(gateway)
        wait_http(f"{gateway_url}/readyz", gateway)
        metrics = httpx.get(f"{gateway_url}/metrics", timeout=5)
        assert metrics.status_code == 401, "GATEWAY_METRICS_TOKEN should guard /metrics"

        rules_file = workdir / "rules.yml"
        rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules_file)],
            "scrape_configs": [scrape_config([f"127.0.0.1:{gw_port}", f"127.0.0.1:{dead_port}"])],
        }
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        checked = promtool("check", "config", str(config_file))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        prom = start(
            "prometheus",
            [
                PROMETHEUS,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            workdir,
        )
        processes.append(prom)
        prometheus_url = f"http://127.0.0.1:{prom_port}"
        wait_http(f"{prometheus_url}/-/ready", prom)
        yield Stack(prometheus_url, gateway_url, workdir, processes, rules_file)
    finally:
        for proc in reversed(processes):
            proc.stop()


class Traffic:
    """Sends the traffic mix in rounds, in a background thread."""

    def __init__(self, gateway_url: str, sim_base_url: Callable[[str], str], rounds: int) -> None:
        self.gateway_url = gateway_url
        self.sim = sim_base_url
        self.rounds = rounds
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="deploy-traffic", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join(timeout=60)

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.gateway_url, timeout=10) as http:
                self._faults()
                for r in range(self.rounds):
                    self._round(http, r)
                    time.sleep(1.2)  # counters must rise across scrapes, not in one step
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        finally:
            self.done.set()

    def _faults(self) -> None:
        # import_batch fails half its calls (5xx: retries, some dead after 2 attempts);
        # Omneo loses half its webhooks (those deliveries end `unconfirmed`).
        r = httpx.put(f"{self.sim('import_batch')}/_sim/faults", json={"error_rate": 0.5})
        assert r.status_code == 200, r.text
        r = httpx.put(f"{self.sim('omneo')}/_sim/webhooks", json={"drop_rate": 0.5})
        assert r.status_code == 200, r.text

    def _round(self, http: httpx.Client, r: int) -> None:
        def post(app: str, body: Any, *, path: str = "/v1/profiles/batch", **headers: str) -> int:
            auth = {"Authorization": f"Bearer {TOKENS.get(app, 'not-a-token')}"}
            return http.post(path, json=body, headers={**auth, **headers}).status_code

        good = [
            {
                "external_id": f"crm-{r}-{i}",
                "email": f"crm.{r}.{i}@example.com",
                "phone": f"+614123{r:02d}{i:03d}",
                "first_name": "Jane",
                "attributes": {"tier": "gold", "visits": i},
            }
            for i in range(5)
        ]
        assert post("crm", {"profiles": good}) == 202
        single = {"external_id": f"shop-{r}", "email": f"shop.{r}@example.com"}
        assert (
            post("shop", {**single, "targets": ["omneo", "import_batch"]}, path="/v1/profiles")
            == 202
        )
        # Ocamba refuses a profile with neither email nor phone: `failed`.
        nocontact = {"external_id": f"nocontact-{r}", "first_name": "Nemo", "targets": ["ocamba"]}
        assert post("crm", nocontact, path="/v1/profiles") == 202
        # Refused writes: invalid, unauthorized, and an idempotency conflict.
        assert post("shop", {"profiles": [{"email": "no-id@example.com"}]}) == 422
        assert post("intruder", {"profiles": good}) == 401
        key = f"key-{r}"
        first = {"external_id": f"idem-{r}", "email": f"idem.{r}@example.com"}
        assert post("crm", first, path="/v1/profiles", **{"Idempotency-Key": key}) == 202
        assert post("crm", first, path="/v1/profiles", **{"Idempotency-Key": key}) == 202
        changed = {**first, "first_name": "Changed"}
        assert post("crm", changed, path="/v1/profiles", **{"Idempotency-Key": key}) == 409
