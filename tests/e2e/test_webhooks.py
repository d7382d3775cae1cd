"""Omneo's webhooks close the loop: real HTTP both ways, signed, deduped, timed out."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.simulators.omneo import omneo_sim
from gateway.store.sqlite import SQLiteStore
from gateway.webhooks.omneo import read_event
from tests.e2e.flow import WEBHOOK_SECRET, Flow, all_in, eventually, running_flow

pytestmark = pytest.mark.anyio

PROFILES = [{"external_id": f"w{i}", "email": f"w{i}@example.com"} for i in range(3)]
CREATED = "/v1/webhooks/omneo/profile.created"


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def stored_events(flow: Flow) -> int:
    conn = sqlite3.connect(flow.settings.sqlite_path())
    try:
        return int(conn.execute("SELECT COUNT(*) FROM webhook_events").fetchone()[0])
    finally:
        conn.close()


async def test_omneo_deliveries_end_confirmed_with_the_omneo_id(tmp_path: Path) -> None:
    async with running_flow(tmp_path) as flow:
        rid = await flow.post(*PROFILES, targets=["omneo"])
        await flow.wait_for(rid, all_in("confirmed"))
        sim = omneo_sim(flow.sims.omneo)
        ids = {p.fields["email"]: str(p.id) for p in sim.profiles.values()}
        for p in PROFILES:
            view = (await flow.http.get(f"/v1/profiles/{p['external_id']}")).json()
            assert view["backend_ids"]["omneo"] == ids[p["email"]]
        metrics = await flow.metrics()
        assert 'gateway_webhooks_total{event="profile.created",result="applied"} 3.0' in metrics
        assert "gateway_confirmation_lag_seconds_count 3.0" in metrics
        # A second write of the same people is an update in Omneo, and confirms too
        # (with a change: the very same profiles again would end `unchanged`).
        changed = [{**p, "last_name": "Again"} for p in PROFILES]
        again = await flow.post(*changed, targets=["omneo"])
        await flow.wait_for(again, all_in("confirmed"))
        assert 'event="profile.updated",result="applied"} 3.0' in await flow.metrics()


async def test_bad_missing_and_tampered_signatures_are_refused_and_change_nothing(
    tmp_path: Path,
) -> None:
    async with running_flow(tmp_path) as flow:
        omneo_sim(flow.sims.omneo).update_settings({"drop_rate": 1.0})
        rid = await flow.post(PROFILES[0], targets=["omneo"])
        await flow.wait_for(rid, all_in("accepted"))
        body = json.dumps({"id": 1, "email": "w0@example.com"}).encode()
        header = flow.settings.omneo_webhook_signature_header
        attempts = [
            {},
            {header: "deadbeef"},
            {header: sign(body, "wrong-secret")},
            {header: sign(body + b" ")},  # signature of another body
        ]
        for headers in attempts:
            r = await flow.http.post(CREATED, content=body, headers=headers)
            assert r.status_code == 401
        assert stored_events(flow) == 0
        assert (await flow.states(rid))[("w0", "omneo")] == "accepted"
        assert 'result="bad_signature"} 4.0' in await flow.metrics()
        # The same body, correctly signed, is taken.
        ok = await flow.http.post(CREATED, content=body, headers={header: sign(body)})
        assert ok.status_code == 200
        await flow.wait_for(rid, all_in("confirmed"))


async def test_a_duplicated_event_is_applied_once(tmp_path: Path) -> None:
    async with running_flow(tmp_path) as flow:
        sim = omneo_sim(flow.sims.omneo)
        sim.update_settings({"duplicate_rate": 1.0})
        rid = await flow.post(*PROFILES, targets=["omneo"])
        await flow.wait_for(rid, all_in("confirmed"))
        await sim.idle()
        assert len([w for w in sim.webhooks if w.status == 200]) == 6  # each sent twice
        metrics = await flow.metrics()
        assert 'event="profile.created",result="applied"} 3.0' in metrics
        assert 'event="profile.created",result="duplicate"} 3.0' in metrics
        assert stored_events(flow) == 3


async def test_dropped_webhooks_become_unconfirmed_and_a_late_event_still_confirms(
    tmp_path: Path,
) -> None:
    env = {"GATEWAY_OMNEO_CONFIRM_TIMEOUT": "0.5"}
    async with running_flow(tmp_path, env=env) as flow:
        sim = omneo_sim(flow.sims.omneo)
        sim.update_settings({"delay": 2.5})  # later than the timeout
        rid = await flow.post(*PROFILES, targets=["omneo"])
        await flow.wait_for(rid, all_in("unconfirmed"))
        listed = await flow.http.get("/v1/dead-letters", params={"state": "unconfirmed"})
        assert len(listed.json()["dead_letters"]) == 3
        assert "gateway_unconfirmed_deliveries 3.0" in await flow.metrics()
        await flow.wait_for(rid, all_in("confirmed"))  # the late webhooks arrive


async def test_unconfirmed_deliveries_can_be_sent_again(tmp_path: Path) -> None:
    env = {"GATEWAY_OMNEO_CONFIRM_TIMEOUT": "0.5"}
    async with running_flow(tmp_path, env=env) as flow:
        sim = omneo_sim(flow.sims.omneo)
        sim.update_settings({"drop_rate": 1.0})
        rid = await flow.post(PROFILES[0], targets=["omneo"])
        await flow.wait_for(rid, all_in("unconfirmed"))
        sim.update_settings({"drop_rate": 0.0})
        r = await flow.http.post(
            "/v1/dead-letters/replay", json={"backend": "omneo", "state": "unconfirmed"}
        )
        assert len(r.json()["requeued"]) == 1
        await flow.wait_for(rid, all_in("confirmed"))
        assert len(sim.batches) == 2


async def test_no_echo_when_the_webhook_shares_the_writing_tokens_namespace(tmp_path: Path) -> None:
    env = {"GATEWAY_OMNEO_CONFIRM_TIMEOUT": "0.5"}
    async with running_flow(tmp_path, env=env) as flow:
        sim = omneo_sim(flow.sims.omneo)
        sim.update_settings({"namespace": "gateway"})  # the token's own namespace
        rid = await flow.post(PROFILES[0], targets=["omneo"])
        await flow.wait_for(rid, all_in("unconfirmed"))
        await sim.idle()
        assert sim.webhooks == []
        assert len(sim.suppressed) == 1


async def test_events_that_match_nothing_are_kept_and_counted(tmp_path: Path) -> None:
    async with running_flow(tmp_path) as flow:
        header = flow.settings.omneo_webhook_signature_header
        body = json.dumps({"id": 77, "email": "someone-else@example.com"}).encode()
        r = await flow.http.post(CREATED, content=body, headers={header: sign(body)})
        assert r.status_code == 200
        await eventually(lambda: _metric(flow, 'result="unmatched"} 1.0'))
        assert stored_events(flow) == 1


async def _metric(flow: Flow, fragment: str) -> bool:
    return fragment in await flow.metrics()


async def test_a_webhook_is_not_lost_when_the_store_cannot_take_it(tmp_path: Path) -> None:
    async with running_flow(tmp_path) as flow:
        omneo_sim(flow.sims.omneo).update_settings({"drop_rate": 1.0})
        rid = await flow.post(PROFILES[0], targets=["omneo"])
        await flow.wait_for(rid, all_in("accepted"))
        store = flow.app.state.ctx.store
        writer = store._writer._conn
        writer.execute(
            f"PRAGMA max_page_count = {writer.execute('PRAGMA page_count').fetchone()[0]}"
        )
        header = flow.settings.omneo_webhook_signature_header
        body = json.dumps({"id": 5, "email": "w0@example.com", "note": "x" * 20000}).encode()
        full = await flow.http.post(CREATED, content=body, headers={header: sign(body)})
        assert full.status_code == 503  # Omneo retries a non-2xx answer
        assert full.headers["retry-after"] == "1"
        writer.execute("PRAGMA max_page_count = 1073741823")
        again = await flow.http.post(CREATED, content=body, headers={header: sign(body)})
        assert again.status_code == 200
        await flow.wait_for(rid, all_in("confirmed"))


async def test_an_event_stored_before_a_crash_is_applied_after_restart(tmp_path: Path) -> None:
    async with running_flow(tmp_path) as flow:
        omneo_sim(flow.sims.omneo).update_settings({"drop_rate": 1.0})
        rid = await flow.post(PROFILES[0], targets=["omneo"])
        await flow.wait_for(rid, all_in("accepted"))
    # The receiver committed an event, then the process died before applying it.
    store = SQLiteStore(tmp_path / "gateway.db")
    await store.open()
    body = json.dumps({"id": 9, "email": "w0@example.com"}).encode()
    await store.save_webhook(read_event("profile.created", body, "email", time.time()))
    await store.close()
    async with running_flow(tmp_path) as restarted:
        await restarted.wait_for(rid, all_in("confirmed"))
        view = (await restarted.http.get("/v1/profiles/w0")).json()
        assert view["backend_ids"]["omneo"] == "9"
