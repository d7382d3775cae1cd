from __future__ import annotations

import asyncio
import hashlib
import hmac

import httpx
import pytest

from gateway.simulators.import_batch import create_import_batch_app
from gateway.simulators.runner import (
    WEBHOOK_CREATED_PATH,
    RunningSimulators,
    SimulatorConfig,
    run_simulators,
)
from gateway.simulators.serving import serve_app
from tests.simulators.helpers import Receiver

pytestmark = pytest.mark.anyio


async def test_run_simulators_runs_all_three_until_cancelled(receiver: Receiver) -> None:
    ready: asyncio.Future[RunningSimulators] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_simulators(
            SimulatorConfig(
                ocamba_port=0,
                omneo_port=0,
                import_batch_port=0,
                omneo_webhook_base_url=receiver.url + "/",
                omneo_webhook_secret="k",
            ),
            on_ready=ready.set_result,
        )
    )
    running = await asyncio.wait_for(ready, 5)
    env = running.gateway_env()
    async with httpx.AsyncClient() as client:
        created = await client.post(
            env["GATEWAY_OCAMBA_URL"] + "/v1/hood/profiles",
            json={"email": "run@x.io"},
            headers={"Authorization": f"Bearer {env['GATEWAY_OCAMBA_TOKEN']}"},
        )
        queued = await client.post(
            env["GATEWAY_OMNEO_URL"] + "/v3/profiles/batch",
            json={"match_criteria": "email", "profiles": [{"email": "run@x.io"}]},
            headers={"Authorization": f"Bearer {env['GATEWAY_OMNEO_TOKEN']}"},
        )
        imported = await client.post(
            env["GATEWAY_IMPORT_BATCH_URL"] + "/v1.1/profiles/import_batch",
            json={
                "token": env["GATEWAY_IMPORT_BATCH_TOKEN"],
                "db_id": int(env["GATEWAY_IMPORT_BATCH_DB_ID"]),
                "data": [{"email": "run@x.io"}],
            },
        )
        assert (created.status_code, queued.status_code, imported.status_code) == (201, 202, 200)
        # Omneo's and import_batch's APIs live under /api, as their docs show;
        # the control routes stay at the root.
        assert env["GATEWAY_OMNEO_URL"] == running.omneo_url + "/api"
        assert env["GATEWAY_IMPORT_BATCH_URL"] == running.import_batch_url + "/api"
        bare_omneo = await client.post(running.omneo_url + "/v3/profiles/batch", json={})
        bare_ib = await client.post(running.import_batch_url + "/v1.1/profiles/import_batch")
        assert (bare_omneo.status_code, bare_ib.status_code) == (404, 404)
        assert (await client.get(running.omneo_url + "/_sim/stats")).status_code == 200
        await receiver.wait_for(1)
        hit = receiver.hits[0]
        assert hit.path == WEBHOOK_CREATED_PATH
        expected = hmac.new(b"k", hit.raw, hashlib.sha256).hexdigest()
        assert hit.headers[env["GATEWAY_OMNEO_WEBHOOK_SIGNATURE_HEADER"].lower()] == expected

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(httpx.ConnectError):
            await client.get(running.ocamba_url + "/_sim/stats")


async def test_a_taken_port_raises_oserror() -> None:
    async with serve_app(create_import_batch_app()) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            async with serve_app(create_import_batch_app(), port=port):
                pass
