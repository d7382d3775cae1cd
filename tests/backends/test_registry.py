from __future__ import annotations

import httpx
import msgspec
import pytest

from gateway.backends.import_batch import ImportBatchAdapter
from gateway.backends.ocamba import OcambaAdapter
from gateway.backends.omneo import OmneoAdapter
from gateway.backends.registry import (
    build_adapters,
    ocamba_time_budget,
    pacing_max_wait,
)
from gateway.backends.transport.pacing import optional_pacer
from gateway.config import Settings
from gateway.schema import Backend as BackendName
from tests.backends.fakes import Backend, item

pytestmark = pytest.mark.anyio


def reply(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path.endswith("/v1/hood/profiles"):
        return httpx.Response(201, json={"id": "1"})
    if path.endswith("/v3/profiles/batch"):
        return httpx.Response(202, json={"data": {"message": "queued", "batch_id": "b"}})
    data = msgspec.json.decode(request.content)["data"]
    result = [{"error": 0, "error_text": "ok", "profile_id": "p"} for _ in data]
    return httpx.Response(200, json={"error": 0, "error_text": "ok", "result": result})


SETTINGS = Settings(
    ocamba_url="http://ocamba.test/",
    ocamba_token="oc-token",
    omneo_url="http://omneo.test/api",
    omneo_token="om-token",
    import_batch_url="http://ib.test/api",
    import_batch_token="ib-token",
)


def test_only_configured_backends_get_an_adapter() -> None:
    backend = Backend(reply)
    adapters = build_adapters(Settings(omneo_url="http://omneo.test"), backend.client())
    assert list(adapters) == ["omneo"]


async def test_each_backend_gets_its_url_auth_and_observer() -> None:
    names: list[BackendName] = ["ocamba", "omneo", "import_batch"]
    backends = {name: Backend(reply) for name in names}
    calls: list[tuple[str, str, str]] = []
    adapters = build_adapters(
        SETTINGS,
        {name: b.client() for name, b in backends.items()},
        on_call=lambda backend, endpoint, status, seconds: calls.append(
            (backend, endpoint, status)
        ),
    )
    assert isinstance(adapters["ocamba"], OcambaAdapter)
    assert isinstance(adapters["omneo"], OmneoAdapter)
    assert isinstance(adapters["import_batch"], ImportBatchAdapter)

    for name in names:
        outcomes = await adapters[name].deliver([item(1, email="a@example.com")])
        assert outcomes[0].state in ("confirmed", "accepted")

    (oc,) = backends["ocamba"].requests
    (om,) = backends["omneo"].requests
    (ib,) = backends["import_batch"].requests
    assert str(oc.url) == "http://ocamba.test/v1/hood/profiles"
    assert oc.headers["authorization"] == "Bearer oc-token"
    assert str(om.url) == "http://omneo.test/api/v3/profiles/batch"
    assert om.headers["authorization"] == "Bearer om-token"
    assert str(ib.url) == "http://ib.test/api/v1.1/profiles/import_batch"
    assert "authorization" not in ib.headers
    assert msgspec.json.decode(ib.content)["token"] == "ib-token"
    assert calls == [
        ("ocamba", "create", "201"),
        ("omneo", "batch", "202"),
        ("import_batch", "import", "200"),
    ]


def test_waits_and_budgets_fit_in_the_lease() -> None:
    settings = Settings(lease_seconds=60, backend_timeout=30)
    assert pacing_max_wait(settings) == 15
    budget = ocamba_time_budget(settings)
    assert budget + pacing_max_wait(settings) + settings.backend_timeout <= settings.lease_seconds
    assert ocamba_time_budget(Settings(lease_seconds=20, backend_timeout=30)) == 0


async def test_backends_without_documented_limits_are_paced_only_when_configured() -> None:
    free = optional_pacer(0, 0, max_in_flight=3, on_wait=None)
    permits = [await free.acquire() for _ in range(3)]
    assert free.waited == 0.0 and free.in_flight == 3
    for p in permits:
        free.release(p)

    # 5 calls at 2 per 1 s window need at least two more windows, whatever the phase.
    paced = optional_pacer(2, 0, max_in_flight=10, on_wait=None)
    for _ in range(5):
        paced.release(await paced.acquire())
    assert paced.waited > 0


def test_omneo_and_import_batch_limits_come_from_settings() -> None:
    settings = Settings.from_env(
        {"GATEWAY_OMNEO_RATE_PER_MINUTE": "600", "GATEWAY_IMPORT_BATCH_MAX_IN_FLIGHT": "2"}
    )
    assert (settings.omneo_rate_per_minute, settings.omneo_rate_per_second) == (600, 0)
    assert settings.import_batch_max_in_flight == 2
