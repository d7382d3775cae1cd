"""The API through a real uvicorn server and real sockets, under concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import AUTH, count
from tests.servers import serve

Rows = Callable[[str], list[tuple[Any, ...]]]


@pytest.mark.anyio
async def test_concurrent_writes_over_real_http_are_all_stored(
    settings: Settings, rows: Rows
) -> None:
    app = create_app(settings)
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base, headers=AUTH) as http:

            async def write(i: int) -> httpx.Response:
                body = {
                    "profiles": [
                        {"external_id": f"c{i}-{j}", "email": f"c{i}.{j}@ex.io"} for j in range(3)
                    ]
                }
                return await http.post("/v1/profiles/batch", json=body)

            answers = await asyncio.gather(*(write(i) for i in range(100)))
            assert [a.status_code for a in answers] == [202] * 100
            ids = {a.json()["request_id"] for a in answers}
            assert len(ids) == 100
            status = await http.get(f"/v1/requests/{answers[42].json()['request_id']}")
            assert [p["external_id"] for p in status.json()["profiles"]] == [
                "c42-0",
                "c42-1",
                "c42-2",
            ]
            metrics = (await http.get("/metrics")).text
            assert 'gateway_inbound_profiles_total{app="crm",outcome="accepted"} 300.0' in metrics
    assert count(rows, "requests") == 100
    assert count(rows, "profile_writes") == 300
    assert count(rows, "expand_queue") == 100  # deliveries: made at the first claim
    # Group commit: 100 concurrent writes needed fewer transactions than writes.
    assert app.state.ctx.store.commits < 100
