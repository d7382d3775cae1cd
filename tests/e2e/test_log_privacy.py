"""No raw email or phone number reaches the logs, across a whole flow."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.logs import JsonFormatter
from gateway.simulators.common import Faults
from gateway.simulators.import_batch import import_batch_sim
from tests.e2e.flow import all_in, running_flow

pytestmark = pytest.mark.anyio

EMAIL, PHONE = "secret.person@example.com", "+61412345678"


async def test_a_full_flow_with_failures_logs_no_email_or_phone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_flow(tmp_path, sim={"import_batch_fields": ("external_id", "a")}) as flow:
        import_batch_sim(flow.sims.import_batch).faults = Faults(error_rate=0.5)
        rid = await flow.post(
            {"external_id": "p", "email": EMAIL, "phone": PHONE, "attributes": {"a": 1}},
            {"external_id": "bad", "phone": PHONE},  # import_batch refuses: no email
        )
        await flow.wait_for(rid, all_in("accepted", "confirmed", "failed"))
        bad = await flow.http.post("/v1/profiles", json={"external_id": "x", "email": EMAIL + "@"})
        assert bad.status_code == 422
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    assert len(lines) > 5
    leaks = [line for line in lines if EMAIL in line or PHONE in line or "412345678" in line]
    assert leaks == []
