"""What every benchmark part shares: the result row, a gateway in its own
process, free ports, and reading a process's memory.

Each part of `bench/run.py` is a module with `run(quick: bool) -> list[Row]`.
Quick mode only proves the part still works (CI runs it); it asserts no timing.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import msgspec

TOKEN = "bench-token-0123456789abcdef0123456789abcdef"
TARGETS = ("ocamba", "omneo", "import_batch")


class Row(msgspec.Struct, kw_only=True):
    """One line of the benchmark table."""

    part: str  # e.g. "1 accept"
    metric: str  # e.g. "gateway profiles/s"
    value: float
    unit: str = ""
    target: str = ""  # human-readable, e.g. ">= 50000"
    met: bool | None = None  # None: no target for this row
    note: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess(msgspec.Struct, kw_only=True):
    base_url: str
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


def gateway_env(database: Path, port: int, **overrides: str) -> dict[str, str]:
    """A gateway environment for benchmarks: SQLite at `database`, one bench
    token, quiet logs, backends pointing nowhere unless overridden."""
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATABASE_URL": f"sqlite:///{database}",
        "GATEWAY_API_TOKENS": f"bench:{TOKEN}:write+read+operate+erase",
        "GATEWAY_OCAMBA_URL": "http://127.0.0.1:9",
        "GATEWAY_OMNEO_URL": "http://127.0.0.1:9",
        "GATEWAY_IMPORT_BATCH_URL": "http://127.0.0.1:9",
        # The gateway refuses a backend URL without its token.
        "GATEWAY_OCAMBA_TOKEN": "ocamba-token",
        "GATEWAY_OMNEO_TOKEN": "omneo-token",
        "GATEWAY_IMPORT_BATCH_TOKEN": "import-batch-token",
        "GATEWAY_DISPATCHER_ENABLED": "false",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_SHUTDOWN_DELAY": "0",  # no load balancer to wait for
    }
    env.update(overrides)
    return env


def wait_ready(base_url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{base_url} did not become ready")
        time.sleep(0.05)


@contextlib.contextmanager
def gateway_process(
    env: Mapping[str, str], *, args: tuple[str, ...] = ()
) -> Iterator[GatewayProcess]:
    """`gateway serve` in its own process, so a load generator does not share
    its interpreter (and GIL) with the server it measures."""
    port = env["GATEWAY_PORT"]
    base = f"http://127.0.0.1:{port}"
    with server_process([sys.executable, "-m", "gateway", "serve", *args], base, env) as proc:
        yield GatewayProcess(base_url=base, proc=proc)


@contextlib.contextmanager
def server_process(
    command: list[str], base_url: str, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server started by `command`, once its /readyz answers; stopped after.
    Its stderr is kept aside and shown if it does not come up."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(command, env=dict(env) if env is not None else None, stderr=stderr)
        try:
            try:
                wait_ready(base_url, proc)
            except RuntimeError as exc:
                stderr.seek(0)
                tail = stderr.read()[-3000:].decode(errors="replace")
                raise RuntimeError(
                    f"{exc} (exit code {proc.poll()}); its stderr ends:\n{tail}"
                ) from None
            yield proc
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_bytes(pid: int) -> int:
    """Resident set size now, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def peak_rss_bytes(pid: int) -> int:
    """High-water mark of the resident set size since the process started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def batch_body(prefix: str, n: int) -> bytes:
    """One batch request body of `n` realistic profiles."""
    return msgspec.json.encode(
        {
            "profiles": [
                {
                    "external_id": f"{prefix}-{j}",
                    "email": f"{prefix}.{j}@example.com",
                    # A different number each: validation caches parsed phones,
                    # and one repeated number would show that cache at its best.
                    "phone": f"+442071{(zlib.crc32(prefix.encode()) + j) % 1_000_000:06d}",
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "attributes": {"tier": "gold", "visits": j},
                }
                for j in range(n)
            ]
        }
    )


def profile_body(prefix: str) -> bytes:
    """One `POST /v1/profiles` body: the first profile of `batch_body`."""
    (profile,) = msgspec.json.decode(batch_body(prefix, 1))["profiles"]
    return msgspec.json.encode(profile)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux)."""
    # The command name (field 2) may hold spaces; the fields after it do not.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of an already sorted sequence, nearest rank."""
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
