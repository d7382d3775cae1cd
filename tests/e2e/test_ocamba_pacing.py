"""Ocamba's limits are per account in fixed windows; the gateway paces below both."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.backends.base import BackendAdapter
from gateway.backends.ocamba import OcambaAdapter
from gateway.backends.transport.pacing import FixedWindowPacer
from gateway.backends.transport.sender import HttpSender
from gateway.config import Settings
from gateway.schema import Backend
from gateway.simulators.ocamba import ocamba_sim
from gateway.simulators.runner import RunningSimulators
from tests.e2e.flow import all_in, running_flow

pytestmark = pytest.mark.anyio

# Ocamba's 10/s and 150/min, scaled so "the minute" lasts 2 s and a test can
# cross several of them: 4 per 1 s window and 10 per 2 s window.
PER_SECOND, PER_MINUTE, MINUTE = 4, 10, 2.0


def paced_ocamba(
    settings: Settings, sims: RunningSimulators, client: httpx.AsyncClient
) -> dict[Backend, BackendAdapter]:
    pacer = FixedWindowPacer(
        PER_SECOND, PER_MINUTE, minute_window=MINUTE, max_in_flight=settings.ocamba_max_in_flight
    )
    sender = HttpSender(
        "ocamba",
        client,
        sims.ocamba_url,
        pacer=pacer,
        timeout=settings.backend_timeout,
        headers={"Authorization": f"Bearer {settings.ocamba_token}"},
        max_wait=settings.lease_seconds / 4,
    )
    return {"ocamba": OcambaAdapter(settings, sender)}


async def test_the_steady_limit_is_never_exceeded(tmp_path: Path) -> None:
    sim_limits = {
        "ocamba_per_second": PER_SECOND,
        "ocamba_per_minute": PER_MINUTE,
        "ocamba_minute_window": MINUTE,
    }
    async with running_flow(tmp_path, sim=sim_limits, adapters=paced_ocamba) as flow:
        profiles = [{"external_id": f"o{i}", "email": f"o{i}@example.com"} for i in range(25)]
        rid = await flow.post(*profiles, targets=["ocamba"])
        await flow.wait_for(rid, all_in("confirmed"), within=30)
        stats = ocamba_sim(flow.sims.ocamba).limiter.stats
        assert stats.admitted == 25
        assert stats.throttled_window == 0  # never refused for a window
        assert stats.max_arrivals_minute_window <= PER_MINUTE
        assert stats.max_arrivals_second_window <= PER_SECOND
        # 25 calls at 10 per 2 s window need at least two full windows.
        arrivals = [r.at for r in ocamba_sim(flow.sims.ocamba).received.items]
        assert max(arrivals) - min(arrivals) >= MINUTE
