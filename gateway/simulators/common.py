"""What every backend simulator shares: fault switches, the request log, the
pipeline that applies both to a business request, and the `/_sim/*` control
endpoints.

Pipeline of one business request (the vendor modules plug into step 3):

1. `delay` is added before every answer, refusals included, once per request.
2. `outage` answers 503 before anything else looks at the request: a load
   balancer with no healthy upstream neither authenticates nor counts.
3. The vendor's own gates run (authentication, Ocamba's rate limiter, ...). A
   request that passes them is then *processed*: the delay is slept at this point
   (so, for Ocamba, while the request holds a concurrency slot), then one random
   draw picks at most one of the timeout / error / throttle faults, in disjoint
   bands of [0, 1) in that order, so each rate is the share of processed requests
   that get that fault as long as the rates sum to at most 1.
4. Every business request is recorded with the status it got.

Randomness comes from one `random.Random` per simulator, seedable, so a test that
sets a seed sees the same faults and ids on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive

from gateway.simulators.windows import FixedWindow

__all__ = [
    "Call",
    "Faults",
    "FixedWindow",
    "Handler",
    "Rate",
    "Received",
    "Recorder",
    "Seconds",
    "SimState",
    "business_endpoint",
    "control_routes",
    "format_seconds",
    "json_response",
]

Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0)]


class Faults(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fault switches; all off by default. `PUT /_sim/faults` replaces them whole."""

    error_rate: Rate = 0.0
    throttle_rate: Rate = 0.0
    retry_after: Seconds = 1.0
    timeout_rate: Rate = 0.0
    hang_seconds: Seconds = 30.0
    delay: Seconds = 0.0
    outage: bool = False


class FaultKind(enum.Enum):
    TIMEOUT = "timeout"
    ERROR = "error"
    THROTTLE = "throttle"


def draw_fault(faults: Faults, rng: random.Random) -> FaultKind | None:
    # No draw when every rate is off, so switching faults on and off does not
    # shift the ids a seeded simulator hands out in between.
    if not (faults.timeout_rate or faults.error_rate or faults.throttle_rate):
        return None
    r = rng.random()
    if r < faults.timeout_rate:
        return FaultKind.TIMEOUT
    if r < faults.timeout_rate + faults.error_rate:
        return FaultKind.ERROR
    if r < faults.timeout_rate + faults.error_rate + faults.throttle_rate:
        return FaultKind.THROTTLE
    return None


class Received(msgspec.Struct, kw_only=True):
    """One business request as the simulator saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    size: int  # raw body bytes
    at: float  # time.monotonic() on arrival
    status: int  # what the simulator answered


class Recorder:
    """The request log. Bounded, so a long benchmark cannot eat the machine."""

    def __init__(self, limit: int = 10_000) -> None:
        self._items: deque[Received] = deque(maxlen=limit)

    def add(self, item: Received) -> None:
        self._items.append(item)

    def clear(self) -> None:
        self._items.clear()

    @property
    def items(self) -> list[Received]:
        return list(self._items)

    def statuses(self, path: str | None = None) -> list[int]:
        return [r.status for r in self._items if path is None or r.path == path]

    def __len__(self) -> int:
        return len(self._items)


def json_response(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        msgspec.json.encode(content),
        status_code=status,
        headers=dict(headers) if headers else None,
        media_type="application/json",
    )


def format_seconds(seconds: float) -> str:
    """Whole seconds as an integer, as HTTP wants; a fraction only when a test
    shrank time below a second (clients parse it as a float)."""
    if seconds == math.floor(seconds):
        return str(int(seconds))
    return f"{seconds:g}"


class SimState:
    """State one simulator owns. Vendor simulators subclass it and say how their
    errors look (`error_body`), and what `/_sim/stats` and `/_sim/profiles` show."""

    def __init__(self, *, seed: int | None = None, record_limit: int = 10_000) -> None:
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.received = Recorder(record_limit)

    def error_body(self, status: int, message: str) -> Any:
        return {"message": message}

    def error(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        return json_response(self.error_body(status, message), status, headers)

    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def stats(self) -> Any:
        return {"received": len(self.received)}

    def profiles_view(self) -> Any:
        return []


async def _until_disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def hang(request: Request, seconds: float) -> None:
    """Stalls like a stuck backend, but gives up when the client does: a
    timed-out client must not keep a simulated slot busy for the full hang."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_until_disconnected(request.receive), seconds)


class Call:
    """One business request on its way through the pipeline."""

    def __init__(self, sim: SimState, request: Request, raw: bytes) -> None:
        self.sim = sim
        self.request = request
        self.raw = raw
        # A snapshot: a PUT /_sim/faults mid-request must not change its fate halfway.
        self.faults = sim.faults
        self.delayed = False
        self.json_ok = True
        self.body: Any = None
        if raw:
            try:
                self.body = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                self.json_ok = False
        else:
            self.json_ok = False

    def bearer_token(self) -> str | None:
        scheme, _, token = self.request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    async def pause(self) -> None:
        """Sleeps the `delay` fault, once per request."""
        if not self.delayed:
            self.delayed = True
            if self.faults.delay > 0:
                await asyncio.sleep(self.faults.delay)

    async def process(self, business: Callable[[], Response]) -> Response:
        """Runs the business logic, unless a drawn fault answers instead."""
        await self.pause()
        fault = draw_fault(self.faults, self.sim.rng)
        if fault is FaultKind.TIMEOUT:
            await hang(self.request, self.faults.hang_seconds)
            return self.sim.error(504, "Gateway timeout.")
        if fault is FaultKind.ERROR:
            return self.sim.error(500, "Internal server error.")
        if fault is FaultKind.THROTTLE:
            retry_after = format_seconds(self.faults.retry_after)
            return self.sim.error(429, "Too many requests.", {"Retry-After": retry_after})
        return business()


Handler = Callable[[Call], Awaitable[Response]]


def business_endpoint(sim: SimState, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a vendor handler in the shared pipeline (outage, delay, recording)."""

    async def endpoint(request: Request) -> Response:
        at = time.monotonic()
        raw = await request.body()
        call = Call(sim, request, raw)
        if call.faults.outage:
            response = sim.error(503, "Service unavailable.")
        else:
            response = await handler(call)
        await call.pause()
        sim.received.add(
            Received(
                method=request.method,
                path=request.url.path,
                headers=dict(request.headers.items()),
                body=call.body,
                size=len(raw),
                at=at,
                status=response.status_code,
            )
        )
        return response

    return endpoint


def control_routes(sim: SimState) -> list[Route]:
    """`/_sim/*`: what tests, benchmarks and the demo use from outside the process."""

    async def get_received(request: Request) -> Response:
        return json_response(sim.received.items)

    async def delete_received(request: Request) -> Response:
        sim.received.clear()
        return Response(status_code=204)

    async def get_faults(request: Request) -> Response:
        return json_response(sim.faults)

    async def put_faults(request: Request) -> Response:
        try:
            faults = msgspec.json.decode(await request.body(), type=Faults)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return json_response({"message": str(exc)}, 422)
        sim.faults = faults
        return json_response(faults)

    async def get_stats(request: Request) -> Response:
        return json_response(sim.stats())

    async def get_profiles(request: Request) -> Response:
        return json_response(sim.profiles_view())

    return [
        Route("/_sim/received", get_received, methods=["GET"]),
        Route("/_sim/received", delete_received, methods=["DELETE"]),
        Route("/_sim/faults", get_faults, methods=["GET"]),
        Route("/_sim/faults", put_faults, methods=["PUT"]),
        Route("/_sim/stats", get_stats, methods=["GET"]),
        Route("/_sim/profiles", get_profiles, methods=["GET"]),
    ]
