"""Serving a Starlette app with uvicorn inside an event loop someone else owns.

The socket is bound here, before uvicorn starts, so a taken port raises OSError
in the caller (uvicorn would `sys.exit`), and port 0 gives a free port whose
number is known at once. Signal handling is left to the host (the CLI or
pytest): cancelling the surrounding task is what stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator

import uvicorn
from starlette.types import ASGIApp

logger = logging.getLogger(__name__)


class _HostedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def serve_app(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, graceful_timeout: int = 2
) -> AsyncIterator[str]:
    """Serves `app` (lifespan included) while the block runs; yields its base URL."""
    sock = bind(host, port)
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,  # leave the host's logging configuration alone
        access_log=False,
        timeout_graceful_shutdown=graceful_timeout,
    )
    server = _HostedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task  # surfaces the startup error
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.005)
        url = base_url(host, sock.getsockname()[1])
        logger.info("serving %s on %s", type(app).__name__, url)
        yield url
    finally:
        server.should_exit = True
        # asyncio.wait, not `await task`: it neither raises the server's own
        # error over the one that got us here nor swallows our cancellation.
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            logger.error("server on %s failed", host, exc_info=task.exception())
        sock.close()
