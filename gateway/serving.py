"""`gateway serve`: uvicorn with a graceful, bounded shutdown.

On the first SIGTERM or SIGINT the process starts draining: `/readyz` answers
503 at once so load balancers take it out, but everything they still send is
served as usual for `GATEWAY_SHUTDOWN_DELAY` seconds. Then uvicorn stops
accepting connections, finishes the requests in flight (at most
`HTTP_DRAIN_SECONDS`) and runs the app's shutdown, in which the dispatcher gets
`GATEWAY_SHUTDOWN_GRACE` seconds to finish its batches. A second signal skips
what is left of the delay.

With `--workers N` a small supervisor holds the listening socket and forwards
every signal to every worker, so each worker drains the same way.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING, TypedDict

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from gateway import logs, tracing
from gateway.api.common import Context
from gateway.app import create_app
from gateway.config import Settings

log = logging.getLogger("gateway.serving")


# What h11 (uvicorn's pure-Python parser) allows for a request line and headers
# together: its default `max_incomplete_event_size`.
MAX_HEAD_BYTES = 16 * 1024


class HeadTooLarge(Exception):
    pass


HAS_HTTPTOOLS = importlib.util.find_spec("httptools") is not None
HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None

if TYPE_CHECKING or HAS_HTTPTOOLS:  # uvicorn's httptools module imports it
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """httptools, refusing a request head over `MAX_HEAD_BYTES` as h11 does.

        httptools sets no limit of its own: it would buffer a header value of any
        size. The head is counted twice: exactly, header by header, once httptools
        has parsed them; and by the bytes received while a head is still
        incomplete, which stops a never-ending header from growing the buffer.
        Either way the answer is uvicorn's 400 for a malformed request, as with h11.
        """

        _head_bytes = 0  # of the current request's URL and headers, as parsed
        _unparsed_bytes = 0  # received since the last request ended
        _in_head = True
        # Seconds a request head may take, from a new connection or from the
        # first byte of a head on a kept-alive one (None: no limit). uvicorn
        # has no such timer: its keep-alive timer runs only between requests
        # and stops at the first byte, so one byte held a connection for ever.
        head_timeout: float | None = None
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            if self.head_timeout is not None and self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                self._arm_head_timer()
            # Counted before parsing: the bytes of the request that ends in `data`
            # are dropped at its end, so only a head still incomplete afterwards
            # can pass the limit (and at most one read's worth goes uncounted).
            self._unparsed_bytes += len(data)
            super().data_received(data)
            if (
                self._in_head
                and self._unparsed_bytes > MAX_HEAD_BYTES
                and not self.transport.is_closing()
            ):
                self.send_400_response("Invalid HTTP request received.")

        def on_message_begin(self) -> None:
            self._head_bytes = 0
            self._in_head = True
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # ": " and CRLF
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm_head_timer()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            # Answered before its body was read (401, 413, ...): uvicorn would go
            # on reading and dropping the rest for as long as the client trickles
            # it, each byte restarting its keep-alive timer. Closed instead.
            if self.cycle is not None and self.cycle.more_body:
                self.transport.close()
            super().on_response_complete()

        def on_message_complete(self) -> None:
            self._unparsed_bytes = 0
            self._in_head = True
            super().on_message_complete()

        def _count(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > MAX_HEAD_BYTES:
                # Raised inside httptools' callback: it comes out of `feed_data` as
                # an HttpParserError, which uvicorn answers with a 400 and a close.
                raise HeadTooLarge(f"request head over {MAX_HEAD_BYTES} bytes")


class ServerOptions(TypedDict):
    loop: str
    http: str | type[asyncio.Protocol]


class LimitOptions(TypedDict):
    limit_concurrency: int
    timeout_keep_alive: int


def server_options(head_timeout: float | None = None) -> ServerOptions:
    """uvicorn's event loop and HTTP parser: uvloop and httptools (C) where they
    are installed, which answers about 1.5 times the requests of one process
    with asyncio's loop and h11 (pure Python); else those, which behave the same
    (except `head_timeout`, which only the httptools protocol enforces)."""
    http: str | type[asyncio.Protocol] = "h11"
    if HAS_HTTPTOOLS:
        http = BoundedHttpToolsProtocol
        if head_timeout is not None:
            timed = {"head_timeout": head_timeout}
            http = type("TimedHttpToolsProtocol", (BoundedHttpToolsProtocol,), timed)
    return ServerOptions(loop="uvloop" if HAS_UVLOOP else "asyncio", http=http)


def limit_options(settings: Settings) -> LimitOptions:
    """What `gateway serve` bounds for every client, signed in or not."""
    return LimitOptions(
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=max(1, math.ceil(settings.keep_alive_timeout)),
    )


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Requests still open when the delay ends are commits and reads of milliseconds.
# One cut off after this never got its answer, so its caller sends it again.
HTTP_DRAIN_SECONDS = 5


class DrainingServer(uvicorn.Server):
    """uvicorn, with a delay between the stop signal and closing the socket."""

    def __init__(
        self, config: uvicorn.Config, *, delay: float, on_drain: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self.delay = delay
        self.on_drain = on_drain
        self.signalled_at: float | None = None
        self.stop_at: float | None = None  # monotonic end of the delay
        self._unlogged: list[tuple[str, str]] = []  # (signal, what it did)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler, between two bytecodes of whatever the loop
        # was doing: it only flips flags and leaves the logging to the loop.
        # Unlike uvicorn's, it does not record the signal to raise it again
        # after shutdown: a drained shutdown is a clean exit, status 0.
        name = signal.Signals(sig).name
        if self.should_exit:
            if sig == signal.SIGINT:  # Ctrl-C while stopping, as in uvicorn
                self.force_exit = True
                self._unlogged.append((name, "force"))
            return
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        self.on_drain()
        if self.stop_at is None and self.delay > 0 and self.started:
            self.stop_at = self.signalled_at + self.delay
            self._unlogged.append((name, "drain"))
        else:
            self.should_exit = True
            self._unlogged.append((name, "stop"))

    def _log_signals(self) -> None:
        while self._unlogged:
            name, action = self._unlogged.pop(0)
            extra = {"signal": name, "pid": os.getpid()}
            if action == "drain":
                log.info(
                    "draining: /readyz answers 503, requests are served for %.1f s more",
                    self.delay,
                    extra=extra,
                )
            elif action == "stop":
                log.info("stopping without further delay", extra=extra)
            else:
                log.warning("forced exit: the dispatcher is not stopped", extra=extra)

    async def on_tick(self, counter: int) -> bool:
        self._log_signals()
        if self.stop_at is not None and time.monotonic() >= self.stop_at:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._log_signals()
        log.info(
            "stopped accepting connections; finishing the requests in flight",
            extra={"connections": len(self.server_state.connections), "pid": os.getpid()},
        )
        await super().shutdown(sockets)
        self._log_signals()
        if self.force_exit:
            return
        since = None if self.signalled_at is None else time.monotonic() - self.signalled_at
        log.info(
            "shutdown complete: requests finished, dispatcher stopped, store closed",
            extra={
                "seconds_since_signal": None if since is None else round(since, 3),
                "pid": os.getpid(),
            },
        )


def run_server(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """One process: the app on `settings.host:settings.port`, or on `sockets`
    (a worker's share of the supervisor's listening socket)."""
    # Per process (a worker is spawned): the exporter's thread does not cross a fork.
    tracing.setup()
    app = create_app(settings)
    ctx: Context = app.state.ctx

    def drain() -> None:
        ctx.draining = True

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=HTTP_DRAIN_SECONDS,
        **limit_options(settings),
        **server_options(settings.head_timeout),
    )
    try:
        DrainingServer(config, delay=settings.shutdown_delay, on_drain=drain).run(sockets)
    finally:
        # The spans still queued go out before the process ends.
        tracing.shutdown()


def serve(settings: Settings) -> int:
    if settings.workers > 1:
        return Supervisor(settings).run()
    run_server(settings)
    return 0


def _worker(sock: socket.socket) -> None:
    """A worker process's main. It is spawned (a fresh interpreter), so it
    reads the settings and sets up logging again."""
    # Out of the supervisor's process group, a worker gets only the signals the
    # supervisor forwards. A signal to the whole group (Ctrl-C in a terminal,
    # `timeout`) would otherwise reach it twice and count as a second signal.
    os.setpgrp()
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    run_server(settings, sockets=[sock])


class Supervisor:
    """`--workers N`: N processes serve one listening socket.

    uvicorn's own supervisor sends each worker a single SIGTERM whatever it
    receives (so a second signal could not cut the delay short) and runs plain
    uvicorn servers in them. This one forwards each SIGTERM or SIGINT to every
    worker as a SIGTERM, replaces a worker that dies while serving, and stops
    everything when one fails to start.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pending: list[int] = []
        self._context = multiprocessing.get_context("spawn")

    def run(self) -> int:
        # The workers read their settings from the environment, so they get
        # the host and port the command line may have overridden.
        os.environ.update(
            {"GATEWAY_HOST": self.settings.host, "GATEWAY_PORT": str(self.settings.port)}
        )
        config = uvicorn.Config(
            "gateway.app:create_app_from_env",
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
        )
        sock = config.bind_socket()
        # bind_socket leaves proto 0, so asyncio in the workers would not set
        # TCP_NODELAY on accepted connections (Nagle + delayed ACK: ~40 ms a
        # response); Linux hands the listener's option down to them.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            return self._supervise(sock)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sock.close()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._pending.append(sig)

    def _start(self, sock: socket.socket) -> BaseProcess:
        process = self._context.Process(target=_worker, args=(sock,), name="gateway-worker")
        process.start()
        log.info("worker started", extra={"pid": process.pid})
        return process

    def _supervise(self, sock: socket.socket) -> int:
        workers = [self._start(sock) for _ in range(self.settings.workers)]
        stopping, status = False, 0
        while True:
            while self._pending:
                sig = signal.Signals(self._pending.pop(0))
                if not stopping:
                    # No worker will be started again, and the socket stops
                    # listening as soon as the last worker closes its copy.
                    sock.close()
                stopping = True
                alive = [w for w in workers if w.is_alive()]
                log.info("stop signal forwarded to the workers", extra={"signal": sig.name})
                for worker in alive:
                    assert worker.pid is not None  # started, so it has one
                    os.kill(worker.pid, signal.SIGTERM)
            alive = [w for w in workers if w.is_alive()]
            if stopping and not alive:
                log.info("every worker has stopped")
                return status
            if not stopping:
                for i, worker in enumerate(workers):
                    if worker.is_alive():
                        continue
                    if worker.exitcode == STARTUP_FAILURE:
                        log.error("a worker failed to start; stopping", extra={"pid": worker.pid})
                        status = STARTUP_FAILURE
                        self._pending.append(signal.SIGTERM)
                        break
                    log.warning(
                        "worker died; starting another",
                        extra={"pid": worker.pid, "exitcode": worker.exitcode},
                    )
                    workers[i] = self._start(sock)
            # Wakes when a worker exits; signals are seen within the timeout.
            wait([w.sentinel for w in workers if w.is_alive()], timeout=0.1)
