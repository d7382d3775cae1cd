"""Per-app quotas on profile writes (README, Per-app quotas): a token bucket per
app counted in profiles, `429` with Retry-After over it, nothing stored. The
buckets run on a FakeClock: the tests step time instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.clock import FakeClock
from gateway.config import Settings
from tests.conftest import AUTH, SHOP_TOKEN, count

Rows = Callable[[str], list[tuple[Any, ...]]]
SHOP = {"Authorization": f"Bearer {SHOP_TOKEN}"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def quota_client(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    # crm: 10 profiles a second, 20 at once; shop: unlimited.
    settings.app_quotas = "crm:10/20"
    app = create_app(settings)
    app.state.ctx.quotas = settings.app_quotas_in_force(clock)
    with TestClient(app) as c:
        yield c


def _batch(n: int, start: int = 0) -> dict[str, Any]:
    return {"profiles": [{"external_id": f"p{i}"} for i in range(start, start + n)]}


def test_a_burst_then_429_with_retry_after_and_nothing_stored(
    quota_client: TestClient, rows: Rows, clock: FakeClock
) -> None:
    assert quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(15)).status_code == 202
    for i in range(5):
        ok = quota_client.post("/v1/profiles", headers=AUTH, json={"external_id": f"s{i}"})
        assert ok.status_code == 202
    stored = count(rows, "profile_writes")
    assert stored == 20

    refused = quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(5, 100))
    assert refused.status_code == 429
    # 5 profiles at 10 a second: half a second, rounded up to whole seconds.
    assert refused.headers["retry-after"] == "1"
    body = refused.json()
    assert body["error"] == "over_quota"
    assert body["message"] == (
        "app 'crm' is over its quota of 10 profiles a second (GATEWAY_APP_QUOTAS);"
        " 5 profile(s) fit again in 1 s"
    )
    single = quota_client.post("/v1/profiles", headers=AUTH, json={"external_id": "late"})
    assert single.status_code == 429
    assert count(rows, "profile_writes") == stored
    assert count(rows, "requests") == 6

    clock.advance(0.5)
    assert (
        quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(5, 100)).status_code
        == 202
    )
    # Empty again: 20 profiles need 2 s.
    full = quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(20, 200))
    assert full.headers["retry-after"] == "2"
    clock.advance(2)
    assert (
        quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(20, 200)).status_code
        == 202
    )


def test_another_app_is_not_held_back(quota_client: TestClient) -> None:
    assert quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(20)).status_code == 202
    assert (
        quota_client.post("/v1/profiles", headers=AUTH, json={"external_id": "x"}).status_code
        == 429
    )
    # shop has no quota (none set, no default): unlimited.
    for _ in range(3):
        r = quota_client.post("/v1/profiles/batch", headers=SHOP, json=_batch(1000))
        assert r.status_code == 202


def test_a_batch_larger_than_the_burst_is_refused_for_good(
    quota_client: TestClient, rows: Rows
) -> None:
    r = quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(21))
    assert r.status_code == 413
    assert "retry-after" not in r.headers  # waiting would not help
    assert r.json()["error"] == "batch_over_quota_burst"
    assert r.json()["message"] == (
        "app 'crm' may send at most 20 profiles at once (its quota's burst,"
        " GATEWAY_APP_QUOTAS); this batch has 21: send smaller batches"
    )
    assert count(rows, "requests") == 0
    # It took nothing: the whole burst is still there.
    assert quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(20)).status_code == 202


def test_writes_that_store_nothing_give_their_tokens_back(
    quota_client: TestClient, rows: Rows
) -> None:
    bad = _batch(20)
    bad["profiles"][3]["email"] = "not-an-email"
    invalid = quota_client.post("/v1/profiles/batch", headers=AUTH, json=bad)
    assert invalid.status_code == 422
    key = {**AUTH, "Idempotency-Key": "k1"}
    assert quota_client.post("/v1/profiles/batch", headers=key, json=_batch(10)).status_code == 202
    # A replay stores nothing new, so it costs nothing.
    replay = quota_client.post("/v1/profiles/batch", headers=key, json=_batch(10))
    assert replay.headers["idempotent-replayed"] == "true"
    conflict = quota_client.post("/v1/profiles/batch", headers=key, json=_batch(10, 50))
    assert conflict.status_code == 409
    assert (
        quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(10, 80)).status_code
        == 202
    )
    assert count(rows, "profile_writes") == 20


def test_a_default_quota_covers_apps_not_listed(settings: Settings, clock: FakeClock) -> None:
    settings.app_quotas = "crm:unlimited"
    settings.app_quota_default = "1/2"
    app = create_app(settings)
    app.state.ctx.quotas = settings.app_quotas_in_force(clock)
    with TestClient(app) as client:
        assert client.post("/v1/profiles/batch", headers=SHOP, json=_batch(2)).status_code == 202
        r = client.post("/v1/profiles", headers=SHOP, json={"external_id": "x"})
        assert (r.status_code, r.headers["retry-after"]) == (429, "1")
        too_many = client.post("/v1/profiles/batch", headers=SHOP, json=_batch(3))
        assert too_many.status_code == 413
        for _ in range(3):
            assert (
                client.post("/v1/profiles/batch", headers=AUTH, json=_batch(1000)).status_code
                == 202
            )


def test_quota_metrics_per_app(quota_client: TestClient) -> None:
    quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(20))
    quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(3, 100))
    quota_client.post("/v1/profiles/batch", headers=AUTH, json=_batch(30, 200))
    quota_client.post("/v1/profiles", headers=SHOP, json={"external_id": "s"})
    text = quota_client.get("/metrics").text
    assert 'gateway_app_quota_profiles_total{app="crm",outcome="admitted"} 20.0' in text
    assert 'gateway_app_quota_profiles_total{app="crm",outcome="rejected"} 33.0' in text
    assert 'gateway_app_quota_rejected_total{app="crm",reason="rate"} 1.0' in text
    assert 'gateway_app_quota_rejected_total{app="crm",reason="burst"} 1.0' in text
    assert 'gateway_inbound_requests_total{app="crm",outcome="over_quota"} 2.0' in text
    # An app without a quota is not counted against one.
    assert 'app_quota_profiles_total{app="shop"' not in text
