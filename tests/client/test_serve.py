"""gateway.client against a real `gateway serve` (a subprocess on 127.0.0.1,
SQLite, dispatcher on) that sends to the import_batch simulator: writes, a
write_many of 2500 in three batches, the status calls, sync and async; and a
write whose first answer is lost to a timeout after the gateway stored it,
retried with the same Idempotency-Key and stored once."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from gateway.client import (
    AsyncGatewayClient,
    GatewayClient,
    GatewayError,
    Profile,
    ProfileView,
    RetryPolicy,
)
from gateway.simulators.import_batch import create_import_batch_app
from tests.conftest import TOKEN
from tests.e2e.test_graceful_shutdown import process, wait_ready
from tests.servers import free_port, serve
from tests.tokens import entry

SIM_TOKEN = "import-batch-token"
WAIT = 60.0
FAST = RetryPolicy(attempts=4, base=0.05, cap=0.2)


class Gateway(msgspec.Struct):
    url: str
    db: Path

    def stored(self, external_id: str) -> int:
        """How many writes of `external_id` the gateway stored."""
        with closing(sqlite3.connect(self.db)) as db:
            query = "SELECT count(*) FROM profile_writes WHERE external_id = ?"
            found: int = db.execute(query, (external_id,)).fetchone()[0]
            return found


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("client-serve")
    with serve(create_import_batch_app(token=SIM_TOKEN)) as sim:
        port = free_port()
        env = {
            "GATEWAY_API_TOKENS": entry("crm", TOKEN),
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp / 'gateway.db'}",
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_IMPORT_BATCH_URL": f"{sim}/api",
            "GATEWAY_IMPORT_BATCH_TOKEN": SIM_TOKEN,
            "GATEWAY_BATCH_LINGER": "0.05",
        }
        log = tmp / "serve.log"
        with process(["serve"], env, log) as proc:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, log)
            yield Gateway(url, tmp / "gateway.db")


def wait_until_confirmed(gw: GatewayClient, external_id: str) -> ProfileView:
    deadline = time.monotonic() + WAIT
    while True:
        view = gw.profile_status(external_id)
        assert isinstance(view, ProfileView)  # crm's token has the read scope
        if view.backends.get("import_batch") and view.backends["import_batch"].state == "confirmed":
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.1)


def test_write_and_its_status(gateway: Gateway) -> None:
    with GatewayClient(gateway.url, TOKEN, retry=FAST) as gw:
        accepted = gw.write(Profile(external_id="client-1", email="one@example.com"))
        assert accepted.profiles == 1 and accepted.targets == ["import_batch"]
        request = gw.request_status(accepted.request_id)
        assert request.app == "crm"
        assert [p.external_id for p in request.profiles] == ["client-1"]
        view = wait_until_confirmed(gw, "client-1")
        assert view.last_request_id == accepted.request_id
        assert view.profile is not None and view.profile.email == "one@example.com"
        assert view.backend_ids.get("import_batch")
        with pytest.raises(GatewayError) as raised:
            gw.request_status("no-such-request")
        assert raised.value.status == 404 and raised.value.error == "not_found"


def test_write_many_of_2500_is_three_requests(gateway: Gateway) -> None:
    people = [Profile(external_id=f"many-{i}", email=f"many{i}@example.com") for i in range(2500)]
    with GatewayClient(gateway.url, TOKEN, retry=FAST) as gw:
        answers = gw.write_many(people)
        assert [a.profiles for a in answers] == [1000, 1000, 500]
        assert len({a.request_id for a in answers}) == 3
        last = gw.request_status(answers[2].request_id)
        assert [p.external_id for p in last.profiles][:2] == ["many-2000", "many-2001"]
        assert len(last.profiles) == 500
        wait_until_confirmed(gw, "many-2499")
    assert gateway.stored("many-0") == gateway.stored("many-2499") == 1


def test_a_refusal_is_raised_with_the_gateways_body(gateway: Gateway) -> None:
    with GatewayClient(gateway.url, TOKEN, retry=FAST) as gw:
        with pytest.raises(GatewayError) as raised:
            gw.write(Profile(external_id="client-bad", email="not an email"))
        assert raised.value.status == 422 and raised.value.attempts == 1
        assert raised.value.body is not None
        assert [e.path for e in raised.value.body.errors] == ["email"]
    with GatewayClient(gateway.url, "wrong-token", retry=FAST) as gw:
        with pytest.raises(GatewayError) as raised:
            gw.write(Profile(external_id="client-bad"))
        assert raised.value.status == 401
    assert gateway.stored("client-bad") == 0


class LoseFirstAnswer(httpx.BaseTransport):
    """Sends every request for real; the first answer is read, kept here and
    replaced by a ReadTimeout, as if it never came back in time."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.answers: list[tuple[int, dict[str, str], Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.answers.append((response.status_code, dict(response.headers), response.json()))
        if len(self.answers) == 1:
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_write_retried_after_a_timeout_is_stored_once(gateway: Gateway) -> None:
    transport = LoseFirstAnswer()
    with GatewayClient(gateway.url, TOKEN, retry=FAST, transport=transport) as gw:
        accepted = gw.write(Profile(external_id="client-lost", email="lost@example.com"))
    (first_status, first_headers, first), (second_status, second_headers, _) = transport.answers
    # The gateway had stored the first try; the retry got that same write back.
    assert first_status == 202 and "idempotent-replayed" not in first_headers
    assert second_status == 202 and second_headers["idempotent-replayed"] == "true"
    assert accepted.request_id == first["request_id"]
    assert gateway.stored("client-lost") == 1


class SwallowFirstAnswer:
    """A TCP proxy on 127.0.0.1 in front of the gateway. On the first connection
    it passes the request on and keeps the gateway's answer to itself (in
    `swallowed`), holding the connection open, so the client's own read timeout
    fires on a write the gateway did store; later connections pass both ways."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.swallowed = b""
        self.connections = 0
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            self.connections += 1
            swallow = self.connections == 1
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, swallow), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, swallow: bool) -> None:
        try:
            while data := source.recv(65536):
                if swallow:
                    self.swallowed += data
                else:
                    sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for s in self.sockets:
            s.close()


def test_a_write_whose_answer_never_came_is_retried_and_stored_once(gateway: Gateway) -> None:
    proxy = SwallowFirstAnswer(gateway.url)
    try:
        with GatewayClient(proxy.url, TOKEN, retry=FAST, timeout=1.0) as gw:
            started = time.monotonic()
            accepted = gw.write(Profile(external_id="client-held", email="held@example.com"))
            assert time.monotonic() - started >= 1.0  # the first try waited out its timeout
    finally:
        proxy.close()
    assert proxy.connections == 2
    # The gateway had answered the first try (202): it stored the write then.
    head, _, body = proxy.swallowed.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202")
    assert msgspec.json.decode(body)["request_id"] == accepted.request_id
    assert gateway.stored("client-held") == 1


class AsyncLoseFirstAnswer(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.request_ids: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if request.method == "POST":
            self.request_ids.append(response.json()["request_id"])
            if len(self.request_ids) == 1:
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.anyio
async def test_the_async_client_against_the_real_server(gateway: Gateway) -> None:
    transport = AsyncLoseFirstAnswer()
    async with AsyncGatewayClient(gateway.url, TOKEN, retry=FAST, transport=transport) as gw:
        people = [Profile(external_id=f"async-{i}") for i in range(2500)]
        answers = await gw.write_many(people, targets=["import_batch"])
        assert [a.profiles for a in answers] == [1000, 1000, 500]
        # The first batch's answer was lost; its retry was answered from the stored write.
        assert transport.request_ids[0] == transport.request_ids[1] == answers[0].request_id
        status = await gw.request_status(answers[0].request_id)
        assert len(status.profiles) == 1000
        view = await gw.profile_status("async-0")
        assert isinstance(view, ProfileView) and view.last_request_id == answers[0].request_id
    assert gateway.stored("async-0") == gateway.stored("async-999") == 1
    assert gateway.stored("async-2499") == 1
