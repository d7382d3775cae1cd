"""Ceiling (a): a bare Starlette app under the same server as the gateway.

It decodes the body with msgspec and answers 202 with a body shaped like the
gateway's, storing nothing: what one uvicorn process can accept at all, so the
gateway's figure can be read as a fraction of it. For part 8 it also answers
Omneo's webhooks at the gateway's path: checks the body's HMAC-SHA256 (hex)
against `--webhook-secret`, decodes it and answers 200, storing nothing.

    .venv/bin/python bench/bare_app.py --port 8090 [--webhook-secret S]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import itertools
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import uvicorn
from common import TARGETS, GatewayProcess, server_process
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.serving import server_options

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class _Accepted(msgspec.Struct):
    request_id: str
    profiles: int
    targets: list[str]


def _answer(profiles: int) -> Response:
    body = _encode(_Accepted(uuid.uuid4().hex, profiles, list(TARGETS)))
    return Response(body, 202, media_type="application/json")


async def post_profile(request: Request) -> Response:
    _decode(await request.body())
    return _answer(1)


async def post_batch(request: Request) -> Response:
    data = _decode(await request.body())
    return _answer(len(data["profiles"]))


async def readyz(request: Request) -> Response:
    return Response(b"ok")


class _Stored(msgspec.Struct):
    status: str
    event_id: int


def create_app(webhook_secret: str = "") -> Starlette:
    secret = webhook_secret.encode()
    event_ids = itertools.count(1)

    async def post_webhook(request: Request) -> Response:
        body = await request.body()
        digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
        presented = request.headers.get("x-omneo-hmac-sha256", "")
        if not hmac.compare_digest(digest, presented):
            return Response(b'{"error":"bad_signature"}', 401, media_type="application/json")
        _decode(body)
        return Response(_encode(_Stored("stored", next(event_ids))), media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/profiles", post_profile, methods=["POST"]),
            Route("/v1/profiles/batch", post_batch, methods=["POST"]),
            Route("/v1/webhooks/omneo/{event}", post_webhook, methods=["POST"]),
            Route("/readyz", readyz),
        ]
    )


@contextlib.contextmanager
def bare_app_process(port: int, webhook_secret: str = "") -> Iterator[GatewayProcess]:
    """This app in its own process, started like `gateway serve` starts."""
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(Path(__file__)), "--port", str(port)]
    command += ["--webhook-secret", webhook_secret]
    with server_process(command, base) as proc:
        yield GatewayProcess(base_url=base, proc=proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--webhook-secret", default="", help="what Omneo's webhooks are signed with"
    )
    args = parser.parse_args()
    # The same server as `gateway serve` with one worker (gateway/serving.py):
    # the same event loop and HTTP implementation.
    uvicorn.run(
        create_app(args.webhook_secret),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        **server_options(),
    )


if __name__ == "__main__":
    main()
