"""Upgrades in place (issue 18 part 6): a database written by the store before
its redesign, with deliveries in every state a running gateway leaves behind
(tests/store/upgrade_fixture.py), is upgraded by the real `gateway migrate`
(or by `gateway serve` itself, GATEWAY_MIGRATE_ON_START=true) to every
migration this checkout ships, then drained by a real `gateway serve` against
the built-in simulators, on SQLite and on PostgreSQL.

What must hold: every open delivery (pending, retrying, in_flight under a dead
worker's lease) reaches its backend exactly once, a person's writes in order;
dead and failed ones stay as they were, unsent; delivered ones are not sent
again; the accepted Omneo delivery is confirmed by its signed webhook and not
sent again; the backend ids are kept and used (Ocamba imports to the recorded
id without creating the person again, import_batch updates the recorded
profile_id); the status API shows all of it. The simulators' request logs
count the calls. The target schema is whatever the migration files say is
newest, so the test keeps its meaning as migrations are added.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.backends.ocamba import CREATE_PATH, IMPORT_PATH
from gateway.simulators.import_batch import import_batch_sim
from gateway.simulators.import_batch_store import StoredProfile
from gateway.simulators.ocamba import OcambaProfile, ocamba_sim
from gateway.simulators.omneo import omneo_sim
from gateway.simulators.runner import RunningSimulators, SimulatorConfig, running_simulators
from tests.conftest import TOKEN
from tests.e2e.flow import FAST, WEBHOOK_SECRET
from tests.servers import free_port
from tests.store import pg
from tests.store import upgrade_fixture as old
from tests.tokens import entry

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {TOKEN}"}
# What each open delivery ends as on its backend: Ocamba's import is final at
# 202, import_batch confirms synchronously, Omneo by the simulator's webhook.
DONE = {"ocamba": "accepted", "omneo": "confirmed", "import_batch": "confirmed"}
# A write made after the upgrade, for a person with two open writes before it.
NEW_TIER = "upg-twice#3"
NEW_PROFILE = {
    "external_id": "upg-twice",
    "email": "twice@example.com",
    "phone": "+61412345678",
    "attributes": {"tier": NEW_TIER},
}
WAITING_OMNEO_ID = "9006"


# -- the database -------------------------------------------------------------


@contextlib.contextmanager
def old_database(engine: str, tmp_path: Path, now: float) -> Iterator[str]:
    """GATEWAY_DATABASE_URL of a database as main's store left it."""
    if engine == "sqlite":
        path = str(tmp_path / "old.db")
        old.build_sqlite(path, now)
        assert old.applied_sqlite(path) == old.old_versions("sqlite")
        yield f"sqlite:///{path}"
        return
    with pg.fresh_database("gateway_upgrade") as url:
        pg.run(old.build_postgres(url, now))
        assert pg.run(old.applied_postgres(url)) == old.old_versions("postgres")
        yield url


def applied(engine: str, url: str) -> set[int]:
    if engine == "sqlite":
        return old.applied_sqlite(url.removeprefix("sqlite:///"))
    return pg.run(old.applied_postgres(url))


# -- the gateway as a real process ----------------------------------------------


def gateway_env(url: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {
        **env,
        "PYTHONUNBUFFERED": "1",
        "GATEWAY_DATABASE_URL": url,
        "GATEWAY_API_TOKENS": entry("crm", TOKEN),
        "GATEWAY_SHUTDOWN_DELAY": "0",
        **extra,
    }


def migrate(url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "migrate"],
        cwd=tmp_path,
        env=gateway_env(url, {}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "schema is up to date" in done.stdout


def start_gateway(args: list[str], tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`gateway <args>` in the background, its output in tmp_path/gateway.log."""
    with (tmp_path / "gateway.log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@contextlib.asynccontextmanager
async def serving(
    url: str, tmp_path: Path, sims: RunningSimulators, port: int, migrate_on_start: bool
) -> AsyncIterator[httpx.AsyncClient]:
    """`gateway serve` in a process of its own, pointed at the simulators."""
    env = gateway_env(
        url,
        {
            **sims.gateway_env(),
            **FAST,
            # Matching by the recorded profile_id when there is one: so the
            # test sees whether the old backend_ids row is used.
            "GATEWAY_IMPORT_BATCH_MATCHING": "email_profile",
            "GATEWAY_MIGRATE_ON_START": "true" if migrate_on_start else "false",
        },
    )
    proc = start_gateway(["serve", "--port", str(port)], tmp_path, env)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=10
        ) as http:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the gateway did not get ready"
                await asyncio.sleep(0.1)
            yield http
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the backends ---------------------------------------------------------------


def seed(sims: RunningSimulators) -> None:
    """What the backends hold of the people the old database says they
    received: Ocamba refuses an import to an id it does not know, and
    import_batch one to a profile_id it has not got."""
    ocamba = ocamba_sim(sims.ocamba)
    batch = import_batch_sim(sims.import_batch)
    for (external_id, backend), backend_id in old.BACKEND_IDS.items():
        email = next(w.profile["email"] for w in old.WRITES if w.external_id == external_id)
        assert isinstance(email, str)
        if backend == "ocamba":
            ocamba.profiles[backend_id] = OcambaProfile(
                id=backend_id,
                email=email,
                mobile_phone_number=None,
                full_name="",
                country_code="",
                create_time="2026-12-01 10:00:00",
                update_time="2026-12-01 10:00:00",
                fields={"email": email},
            )
        elif backend == "import_batch":
            batch.store.profiles[backend_id] = StoredProfile(
                profile_id=backend_id, db_id=batch.db_id, fields={"email": email}
            )


def ok_calls(sim: Any, path: str | None = None) -> list[Any]:
    """The business requests a simulator took (2xx), in arrival order."""
    return [
        r for r in sim.received.items if r.status < 300 and (path is None or r.path.endswith(path))
    ]


def sent_tiers(sims: RunningSimulators) -> dict[str, list[str]]:
    """Per backend, the `tier` of every profile it took, in arrival order."""
    ocamba = [
        p["custom_properties"]["tier"]["value"]
        for r in ok_calls(ocamba_sim(sims.ocamba), IMPORT_PATH)
        for p in r.body["profiles"]
    ]
    omneo = [
        a["value"]
        for r in ok_calls(omneo_sim(sims.omneo), "/profiles/batch")
        for p in r.body["profiles"]
        for a in p.get("custom_attributes", [])
        if a["handle"] == "tier"
    ]
    batch = [
        item["tier"]
        for r in ok_calls(import_batch_sim(sims.import_batch), "/import_batch")
        for item in r.body["data"]
    ]
    return {"ocamba": ocamba, "omneo": omneo, "import_batch": batch}


# -- the status API ---------------------------------------------------------------


async def states(http: httpx.AsyncClient, request_ids: list[str]) -> dict[int, dict[str, Any]]:
    """(write in the fixture's numbering, or 0 for the new one) -> backend -> delivery."""
    found: dict[int, dict[str, Any]] = {}
    for rid in request_ids:
        r = await http.get(f"/v1/requests/{rid}")
        assert r.status_code == 200, r.text
        for p in r.json()["profiles"]:
            write = next(
                (w.id for w in old.WRITES if (w.request_id, w.position) == (rid, p["position"])),
                0,
            )
            found[write] = {d["backend"]: _carried(d) for d in p["deliveries"]}
    return found


def _carried(d: dict[str, Any]) -> dict[str, Any]:
    """A write merged into an earlier one's delivery (queued behind it when it
    was claimed) ends as that one did: read as its carrier's state."""
    if d["state"] != "merged":
        return d
    return {**d, "state": d["carrier_state"], "merged": True}


def expected(waiting_confirmed: bool) -> dict[int, dict[str, str]]:
    want: dict[int, dict[str, str]] = {0: dict(DONE)}
    for d in old.DELIVERIES:
        state = DONE[d.backend] if d.state in old.OPEN else d.state
        if d.write_id == 6 and d.backend == "omneo" and waiting_confirmed:
            state = "confirmed"
        want.setdefault(d.write_id, {})[d.backend] = state
    return want


async def wait_for(
    http: httpx.AsyncClient, request_ids: list[str], want: dict[int, dict[str, str]]
) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        now = await states(http, request_ids)
        seen = {w: {b: d["state"] for b, d in ds.items()} for w, ds in now.items()}
        if seen == want:
            return now
        assert time.monotonic() < deadline, f"not drained: {seen}"
        await asyncio.sleep(0.1)


def sign(body: bytes) -> str:
    return hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()


# -- the test -------------------------------------------------------------------------


@pytest.mark.parametrize("upgrade", ["gateway-migrate", "migrate-on-start"])
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_an_old_database_upgrades_in_place_and_drains_without_loss_or_resends(
    engine: str, upgrade: str, tmp_path: Path
) -> None:
    with old_database(engine, tmp_path, time.time()) as url:
        if upgrade == "gateway-migrate":
            migrate(url, tmp_path)
            assert applied(engine, url) == old.every_version(engine)
        port = free_port()
        config = SimulatorConfig(
            ocamba_port=0,
            omneo_port=0,
            import_batch_port=0,
            omneo_webhook_base_url=f"http://127.0.0.1:{port}",
            omneo_webhook_secret=WEBHOOK_SECRET,
            omneo_processing_delay=0.01,
            seed=7,
        )
        async with running_simulators(config) as sims:
            seed(sims)
            # Started with migrate-on-start off after `gateway migrate`: on
            # PostgreSQL it would refuse a schema still behind.
            async with serving(
                url, tmp_path, sims, port, migrate_on_start=upgrade == "migrate-on-start"
            ) as http:
                assert applied(engine, url) == old.every_version(engine)
                # A new write of a person two of whose old writes are still
                # open: it must reach each backend after them.
                r = await http.post("/v1/profiles", json=NEW_PROFILE)
                assert r.status_code == 202, r.text
                request_ids = [req.id for req in old.REQUESTS] + [r.json()["request_id"]]

                drained = await wait_for(http, request_ids, expected(waiting_confirmed=False))
                # Nothing left for the dispatcher, nothing more sent meanwhile.
                await asyncio.sleep(0.5)
                before_webhook = sent_tiers(sims)

                # Omneo's webhook for the delivery it accepted before the upgrade.
                body = json.dumps(
                    {
                        "id": int(WAITING_OMNEO_ID),
                        "email": "waiting@example.com",
                        "updated_at": "2026-12-04T10:00:00Z",
                    }
                ).encode()
                hook = await http.post(
                    "/v1/webhooks/omneo/profile.updated",
                    content=body,
                    headers={"X-Omneo-Hmac-SHA256": sign(body)},
                )
                assert hook.status_code == 200, hook.text
                final = await wait_for(http, request_ids, expected(waiting_confirmed=True))
                profiles = {
                    e: (await http.get(f"/v1/profiles/{e}")).json()
                    for e in {w.external_id for w in old.WRITES}
                }
                # The old request's Idempotency-Key still holds: another body
                # under it is refused, naming the old request.
                again = await http.post(
                    "/v1/profiles",
                    json={"external_id": "upg-fresh", "email": "fresh@example.com"},
                    headers={"Idempotency-Key": old.R3.idempotency_key or ""},
                )
                assert again.status_code == 409, again.text
                assert old.R3.id in again.json()["message"]

    # Exactly the open writes reached each backend, once each, nothing else;
    # a person's writes in order (upg-twice: two old open writes, then a new one).
    tiers = sent_tiers(sims)
    assert tiers == before_webhook  # the webhook made nothing go out again
    for backend in old.TARGETS:
        wanted = [w.tier for w in old.to_send(backend) if not w.tier.startswith("upg-twice#")]
        others = [t for t in tiers[backend] if not t.startswith("upg-twice#")]
        assert sorted(others) == sorted(wanted), backend
        assert not {w.tier for w in old.not_to_send(backend)} & set(tiers[backend]), backend
        # upg-twice's writes in order, each at most once, the newest last: one
        # still queued when an earlier one was claimed went inside it (merged).
        twice = [t for t in tiers[backend] if t.startswith("upg-twice#")]
        assert twice == sorted(set(twice)) and twice[-1] == NEW_TIER, backend
    assert all(old.to_send(b) and old.not_to_send(b) for b in old.TARGETS)

    # Ocamba created only the people it had no id for, and imported to the
    # recorded id of the one it knew.
    ocamba = ocamba_sim(sims.ocamba)
    creates = sorted(r.body["email"] for r in ok_calls(ocamba, CREATE_PATH))
    assert creates == ["flight@example.com", "fresh@example.com", "twice@example.com"]
    assert ocamba.duplicate_creates == 0
    known_ocamba = old.BACKEND_IDS[("upg-known", "ocamba")]
    imported = [
        (p["id"], p["custom_properties"]["tier"]["value"])
        for r in ok_calls(ocamba, IMPORT_PATH)
        for p in r.body["profiles"]
    ]
    assert (known_ocamba, "upg-known#2") in imported
    assert ocamba.profiles[known_ocamba].custom_properties["tier"]["value"] == "upg-known#2"
    # import_batch updated the recorded profile rather than creating one.
    batch = import_batch_sim(sims.import_batch)
    known_batch = old.BACKEND_IDS[("upg-known", "import_batch")]
    items = [i for r in ok_calls(batch, "/import_batch") for i in r.body["data"]]
    assert [i.get("profile_id") for i in items if i["tier"] == "upg-known#2"] == [known_batch]
    assert batch.store.profiles[known_batch].fields["tier"] == "upg-known#2"
    emails = sorted(p.fields["email"] for p in batch.store.profiles.values())
    assert emails == sorted({str(w.profile["email"]) for w in old.WRITES} - {"dead@example.com"})

    # States, attempts and errors of what was not open are as they were; the
    # open ones were sent; the waiting Omneo delivery was confirmed by its
    # webhook (and waited `accepted` until then).
    assert drained[6]["omneo"]["state"] == "accepted"
    for d in old.DELIVERIES:
        seen = final[d.write_id][d.backend]
        if d.state in old.OPEN:
            # A merged one's attempt was its carrier's.
            assert seen.get("merged") or seen["attempts"] >= max(1, d.attempts), (d, seen)
        elif (d.write_id, d.backend) != (6, "omneo"):
            assert (seen["state"], seen["attempts"], seen["last_error"]) == (
                d.state,
                d.attempts,
                d.last_error,
            ), d
        assert seen["backend_id"] == (
            profiles[old.WRITE[d.write_id].external_id]["backend_ids"].get(d.backend)
        )

    # Backend ids: the recorded ones kept; the webhook's Omneo id recorded.
    for (external_id, backend), backend_id in old.BACKEND_IDS.items():
        if backend != "omneo":
            assert profiles[external_id]["backend_ids"][backend] == backend_id
    assert profiles["upg-waiting"]["backend_ids"]["omneo"] == WAITING_OMNEO_ID
    assert set(profiles["upg-fresh"]["backend_ids"]) == set(old.TARGETS)
    # The profile API reads the old bodies (and the new write for upg-twice).
    for external_id, view in profiles.items():
        latest = max((w for w in old.WRITES if w.external_id == external_id), key=lambda w: w.id)
        if external_id == "upg-twice":
            assert view["profile"]["attributes"] == {"tier": NEW_TIER}
            continue
        assert view["last_request_id"] == latest.request_id
        assert view["profile"] == old.decoded(latest)
        assert {b: d["state"] for b, d in view["backends"].items()} == expected(True)[latest.id]
