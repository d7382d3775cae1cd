"""Run ASGI apps under a real uvicorn server on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from gateway.serving import server_options


def free_base_port(count: int = 3) -> int:
    """`count` consecutive free ports below the kernel's ephemeral range
    (32768 and up on Linux): outgoing connections take their source ports from
    that range and could grab a port between this check and a later bind."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - count)
        if all(_can_bind(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def free_port() -> int:
    return free_base_port(1)


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def serve(app: ASGIApp, port: int | None = None) -> Iterator[str]:
    """Yields the base URL while `app` runs in a background thread."""
    port = port or free_port()
    # The same HTTP stack as `gateway serve` (httptools with its header bound).
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **server_options()
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
