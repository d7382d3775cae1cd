"""No unauthenticated work beyond a small bound: a real `gateway serve` on
127.0.0.1, driven over raw sockets the way a hostile client would."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

TOKEN = "limits-token-0123456789abcdef0123456789"
SECRET = "limits-webhook-secret"
HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
WEBHOOK = "/v1/webhooks/omneo/profile.created"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
        "GATEWAY_API_TOKENS": f"crm:{TOKEN}",
        "GATEWAY_OMNEO_WEBHOOK_SECRET": SECRET,
        "GATEWAY_DISPATCHER_ENABLED": "false",
        "GATEWAY_SHUTDOWN_DELAY": "0",
        "GATEWAY_HEAD_TIMEOUT": str(HEAD_TIMEOUT),
        "GATEWAY_BODY_READ_TIMEOUT": str(BODY_TIMEOUT),
        "GATEWAY_LIMIT_CONCURRENCY": "20",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        yield base, port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> tuple[float, bytes]:
    """Seconds until the server closed `sock` (reading whatever it sent first)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {seconds} s; got {received!r}") from None
    except ConnectionResetError:
        pass
    return time.monotonic() - started, received


def test_a_stalled_request_head_is_closed_within_the_head_timeout(
    server: tuple[str, int, subprocess.Popen[bytes]],
) -> None:
    _, port, _ = server
    silent = _connect(port)  # connects and sends nothing
    partial = _connect(port)
    partial.sendall(b"POST /v1/profiles HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    waited, _ = _closed_within(partial, HEAD_TIMEOUT + 5)
    assert waited <= HEAD_TIMEOUT + 1.5
    _, received = _closed_within(silent, HEAD_TIMEOUT + 5)
    assert received == b""
    # A kept-alive connection gets the same bound on its next head.
    kept = _connect(port)
    kept.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    kept.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    _closed_within(kept, HEAD_TIMEOUT + 5)
    assert time.monotonic() - started <= HEAD_TIMEOUT + 1.5
    for s in (silent, partial, kept):
        s.close()


def test_a_stalled_body_is_answered_408_and_closed(
    server: tuple[str, int, subprocess.Popen[bytes]],
) -> None:
    _, port, _ = server
    sock = _connect(port)
    sock.sendall(
        b"POST /v1/profiles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n".encode()
        + b'{"external_id": '
    )
    waited, received = _closed_within(sock, BODY_TIMEOUT + 5)
    assert waited <= BODY_TIMEOUT + 1.5
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b'"error":"timeout"' in received
    sock.close()
    # Refused before its body is read (no token): closed, not read to the end.
    sock = _connect(port)
    sock.sendall(b"POST /v1/profiles HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{")
    waited, received = _closed_within(sock, 5)
    assert received.startswith(b"HTTP/1.1 401"), received[:200]
    assert waited < 2
    sock.close()


def test_webhook_bodies_stop_at_their_own_limit_before_the_signature(
    server: tuple[str, int, subprocess.Popen[bytes]],
) -> None:
    base, port, proc = server
    # Declared too large: refused before a byte of the body is read.
    big = b'{"email": "' + b"x" * (300 * 1024) + b'"}'
    signature = hmac.new(SECRET.encode(), big, hashlib.sha256).hexdigest()
    answer = httpx.post(
        base + WEBHOOK, content=big, headers={"X-Omneo-Hmac-SHA256": signature}, timeout=10
    )
    assert answer.status_code == 413 and answer.json()["error"] == "too_large"

    # Chunked, no length: reading stops at the limit.
    def chunks() -> Iterator[bytes]:
        yield from (big[i : i + 65536] for i in range(0, len(big), 65536))

    answer = httpx.post(base + WEBHOOK, content=chunks(), timeout=10)
    assert answer.status_code == 413
    # Under the limit, the signature decides as before.
    small = b'{"email": "a@example.com", "id": 7}'
    assert httpx.post(base + WEBHOOK, content=small, timeout=10).status_code == 401

    # Eight 5 MB bodies, stalled after their first part: memory stays flat,
    # and each is closed (413 at the limit) instead of being held.
    before = _rss_kib(proc.pid)
    sockets = []
    for _ in range(8):
        s = _connect(port)
        s.sendall(
            f"POST {WEBHOOK} HTTP/1.1\r\nHost: x\r\nContent-Length: {5_000_000}\r\n\r\n".encode()
        )
        sockets.append(s)
    for s in sockets:
        _, received = _closed_within(s, 10)
        assert received.startswith(b"HTTP/1.1 413"), received[:200]
    # Eight chunked bodies that try to send 5 MB each and then stall: the
    # server stops reading each at the limit, so memory stays flat.
    stalled = []
    piece = b"%x\r\n%s\r\n" % (64 * 1024, b"y" * (64 * 1024))
    for _ in range(8):
        s = _connect(port)
        s.settimeout(2)
        s.sendall(
            f"POST {WEBHOOK} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        try:
            for _ in range(5_000_000 // len(piece)):
                s.sendall(piece)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading, or closed: what is wanted
        stalled.append(s)
    time.sleep(0.5)
    grown = _rss_kib(proc.pid) - before
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB"
    for s in stalled:
        s.close()
    assert httpx.get(base + "/livez", timeout=5).status_code == 200


def test_connections_past_the_concurrency_limit_get_503(
    server: tuple[str, int, subprocess.Popen[bytes]],
) -> None:
    base, port, _ = server
    # uvicorn counts the connection asking too: 19 open ones leave no room.
    held = [_connect(port) for _ in range(19)]
    for s in held:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    answer = httpx.get(base + "/livez", timeout=5)
    assert answer.status_code == 503
    for s in held:
        s.close()
    deadline = time.monotonic() + 5
    while httpx.get(base + "/livez", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
