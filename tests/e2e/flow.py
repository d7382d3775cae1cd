"""The gateway and the three simulators on real sockets on 127.0.0.1, in one loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.backends.base import BackendAdapter
from gateway.config import Settings
from gateway.schema import Backend
from gateway.simulators.runner import RunningSimulators, SimulatorConfig, running_simulators
from gateway.simulators.serving import serve_app
from tests.conftest import TOKEN
from tests.servers import free_port
from tests.tokens import entry

WEBHOOK_SECRET = "e2e-webhook-secret"

# Fast enough for tests, same mechanisms as production.
FAST = {
    "GATEWAY_BATCH_LINGER": "0.05",
    "GATEWAY_RETRY_BASE": "0.05",
    "GATEWAY_RETRY_CAP": "0.3",
    "GATEWAY_BACKEND_TIMEOUT": "2",
    "GATEWAY_LEASE_SECONDS": "10",
}


@dataclass
class Flow:
    base: str
    http: httpx.AsyncClient
    sims: RunningSimulators
    app: Starlette
    settings: Settings

    async def post(self, *profiles: dict[str, Any], **extra: Any) -> str:
        r = await self.http.post("/v1/profiles/batch", json={"profiles": list(profiles), **extra})
        assert r.status_code == 202, r.text
        return str(r.json()["request_id"])

    async def states(self, request_id: str) -> dict[tuple[str, str], str]:
        body = (await self.http.get(f"/v1/requests/{request_id}")).json()
        return {
            (p["external_id"], d["backend"]): d["state"]
            for p in body["profiles"]
            for d in p["deliveries"]
        }

    async def wait_for(
        self,
        request_id: str,
        done: Callable[[dict[tuple[str, str], str]], bool],
        within: float = 15,
    ) -> dict[tuple[str, str], str]:
        deadline = time.monotonic() + within
        while True:
            states = await self.states(request_id)
            if done(states):
                return states
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; states now {states}")
            await asyncio.sleep(0.05)

    async def metrics(self) -> str:
        return (await self.http.get("/metrics")).text


def all_in(*wanted: str) -> Callable[[dict[tuple[str, str], str]], bool]:
    return lambda states: bool(states) and all(s in wanted for s in states.values())


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


AdapterFactory = Callable[
    [Settings, RunningSimulators, httpx.AsyncClient], dict[Backend, BackendAdapter]
]


@contextlib.asynccontextmanager
async def running_flow(
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    sim: dict[str, Any] | None = None,
    adapters: AdapterFactory | None = None,
) -> AsyncIterator[Flow]:
    port = free_port()
    config = SimulatorConfig(
        ocamba_port=0,
        omneo_port=0,
        import_batch_port=0,
        omneo_webhook_base_url=f"http://127.0.0.1:{port}",
        omneo_webhook_secret=WEBHOOK_SECRET,
        omneo_processing_delay=0.01,
        seed=7,
        **(sim or {}),
    )
    async with running_simulators(config) as sims:
        settings = Settings.from_env(
            {
                **sims.gateway_env(),
                "GATEWAY_API_TOKENS": entry("crm", TOKEN),
                "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
                **FAST,
                **(env or {}),
            }
        )
        backend_client = httpx.AsyncClient(timeout=settings.backend_timeout)
        built = adapters(settings, sims, backend_client) if adapters else None
        app = create_app(settings, adapters=built)
        async with (
            backend_client,
            serve_app(app, port=port) as base,
            httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            ) as http,
        ):
            yield Flow(base, http, sims, app, settings)
