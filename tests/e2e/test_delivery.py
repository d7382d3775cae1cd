"""Fan-out end to end: gateway -> real HTTP -> the three simulators -> outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.simulators.common import Faults
from gateway.simulators.import_batch import import_batch_sim
from gateway.simulators.ocamba import ocamba_sim
from gateway.simulators.omneo import omneo_sim
from tests.e2e.flow import all_in, eventually, running_flow

pytestmark = pytest.mark.anyio

ADA = {
    "external_id": "ada",
    "email": "Ada@Example.com",
    "phone": "+61 412 345 678",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "birth_date": "1815-12-10",
    "gender": "female",
    "identities": {"shopify_id": "S-1"},
    "attributes": {"tier": "gold", "points": 3},
}
BOB = {"external_id": "bob", "email": "bob@example.com"}
# The import_batch database the flow runs against has ADA's attributes as fields.
ADA_FIELDS = {"import_batch_fields": ("external_id", "tier", "points")}
DONE = ("accepted", "confirmed")


def bodies(app: Any, path: str) -> list[Any]:
    return [r.body for r in app.state.sim.received.items if r.path == path and r.status < 300]


async def test_a_batch_reaches_all_three_backends_in_their_documented_shapes(
    tmp_path: Path,
) -> None:
    async with running_flow(tmp_path, sim=ADA_FIELDS) as flow:
        rid = await flow.post(ADA, BOB)
        states = await flow.wait_for(rid, all_in(*DONE))
        assert states[("ada", "ocamba")] == "accepted"  # created, then properties imported
        assert states[("bob", "ocamba")] == "confirmed"  # created, nothing to import
        assert states[("ada", "import_batch")] == "confirmed"

        # Ocamba: one create per profile with only the documented fields ...
        ocamba = flow.sims.ocamba
        creates = bodies(ocamba, "/v1/hood/profiles")
        assert sorted(creates, key=lambda b: b["email"]) == [
            {
                "email": "ada@example.com",
                "mobile_phone_number": "+61412345678",
                "full_name": "Ada Lovelace",
            },
            {"email": "bob@example.com"},
        ]
        auth = {r.headers["authorization"] for r in ocamba.state.sim.received.items}
        assert auth == {"Bearer ocamba-token"}
        # ... then the import carries the id Ocamba gave, with typed custom_properties.
        [ada_id] = [p.id for p in ocamba_sim(ocamba).find_by_email("ada@example.com")]
        assert bodies(ocamba, "/v1/hood/profiles/import") == [
            {
                "profiles": [
                    {
                        "id": ada_id,
                        "custom_properties": {
                            "tier": {"type": "string", "value": "gold"},
                            "points": {"type": "string", "value": "3"},
                        },
                    }
                ]
            }
        ]

        # Omneo: one batch, match_criteria from config, a recognisable import_job_id.
        [batch] = bodies(flow.sims.omneo, "/api/v3/profiles/batch")
        assert batch["match_criteria"] == "email"
        assert batch["import_job_id"].startswith("gw-")
        by_email = {p["email"]: p for p in batch["profiles"]}
        assert by_email["ada@example.com"] == {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
            "gender": "female",
            "mobile_phone": "+61412345678",
            "birth_day": 10,
            "birth_month": 12,
            "birth_year": 1815,
            "identities": [{"handle": "shopify_id", "identifier": "S-1", "is_active": True}],
            "custom_attributes": [
                {"namespace": "gateway", "handle": "tier", "type": "string", "value": "gold"},
                {"namespace": "gateway", "handle": "points", "type": "string", "value": "3"},
            ],
        }
        assert by_email["bob@example.com"] == {"email": "bob@example.com"}

        # import_batch: token, db_id, matching from config; fields in the vendor's names.
        [imported] = bodies(flow.sims.import_batch, "/api/v1.1/profiles/import_batch")
        assert {k: imported[k] for k in ("token", "db_id", "matching")} == {
            "token": "import-batch-token",
            "db_id": 1,
            "matching": "email",
        }
        assert imported["data"] == [
            {
                "_fname": "Ada",
                "_lname": "Lovelace",
                "email": "ada@example.com",
                "phone": "+61412345678",
                "tier": "gold",
                "points": 3,
                "external_id": "ada",
            },
            {"email": "bob@example.com", "external_id": "bob"},
        ]

        # The ids each backend gave are on the profile.
        view = (await flow.http.get("/v1/profiles/ada")).json()
        assert view["backend_ids"]["ocamba"] == ada_id
        ib_ids = set(import_batch_sim(flow.sims.import_batch).profiles)
        assert view["backend_ids"]["import_batch"] in ib_ids

        metrics = await flow.metrics()
        assert 'gateway_deliveries_total{backend="import_batch",outcome="confirmed"} 2.0' in metrics
        labels = 'backend="ocamba",endpoint="create",status="201"'
        assert f"gateway_backend_call_seconds_count{{{labels}}} 2.0" in metrics
        assert 'gateway_batch_size_count{backend="omneo"} 1.0' in metrics


async def test_a_known_ocamba_profile_is_updated_through_import_only(tmp_path: Path) -> None:
    async with running_flow(
        tmp_path, env={"GATEWAY_IMPORT_BATCH_URL": "", "GATEWAY_OMNEO_URL": ""}
    ) as flow:
        first = await flow.post(ADA)
        await flow.wait_for(first, all_in(*DONE))
        second = await flow.post({**ADA, "attributes": {"tier": "platinum"}})
        await flow.wait_for(second, all_in(*DONE))
        sim = ocamba_sim(flow.sims.ocamba)
        assert len(bodies(flow.sims.ocamba, "/v1/hood/profiles")) == 1  # created once
        [profile] = sim.find_by_email("ada@example.com")
        assert profile.custom_properties["tier"] == {"type": "string", "value": "platinum"}
        assert sim.duplicate_creates == 0


async def test_ocamba_without_email_or_phone_fails_with_the_reason(tmp_path: Path) -> None:
    async with running_flow(tmp_path) as flow:
        rid = await flow.post({"external_id": "anon", "first_name": "Anon"}, targets=["ocamba"])
        states = await flow.wait_for(rid, all_in("failed"))
        assert states == {("anon", "ocamba"): "failed"}
        body = (await flow.http.get(f"/v1/requests/{rid}")).json()
        assert "email or a mobile phone" in body["profiles"][0]["deliveries"][0]["last_error"]
        assert bodies(flow.sims.ocamba, "/v1/hood/profiles") == []


async def test_import_batch_per_profile_errors_fail_only_those_profiles(tmp_path: Path) -> None:
    async with running_flow(tmp_path) as flow:
        rid = await flow.post(
            {"external_id": "ok-1", "email": "ok1@example.com"},
            {"external_id": "no-email", "phone": "+61412345678"},
            {"external_id": "ok-2", "email": "ok2@example.com"},
            targets=["import_batch"],
        )
        states = await flow.wait_for(rid, all_in("confirmed", "failed"))
        assert states == {
            ("ok-1", "import_batch"): "confirmed",
            ("no-email", "import_batch"): "failed",
            ("ok-2", "import_batch"): "confirmed",
        }
        body = (await flow.http.get(f"/v1/requests/{rid}")).json()
        error = body["profiles"][1]["deliveries"][0]["last_error"]
        assert "102" in error or "match" in error.lower()
        ids = [p["deliveries"][0]["backend_id"] for p in body["profiles"]]
        assert ids[0] and ids[2] and ids[1] is None


async def test_429s_and_500s_are_retried_until_every_write_is_delivered(tmp_path: Path) -> None:
    # Enough attempts that a 50% failure rate cannot plausibly exhaust them.
    env = {"GATEWAY_IMPORT_BATCH_BATCH_SIZE": "5", "GATEWAY_MAX_ATTEMPTS": "40"}
    async with running_flow(tmp_path, env=env) as flow:
        sim = import_batch_sim(flow.sims.import_batch)
        sim.faults = Faults(error_rate=0.25, throttle_rate=0.25, retry_after=0.1)
        profiles = [{"external_id": f"u{i}", "email": f"u{i}@example.com"} for i in range(40)]
        rid = await flow.post(*profiles, targets=["import_batch"])
        await flow.wait_for(rid, all_in("confirmed"), within=30)
        statuses = [r.status for r in sim.received.items]
        assert 500 in statuses and 429 in statuses  # the faults really fired
        # Nothing lost, nothing created twice (same email -> same profile there).
        assert len(sim.profiles) == 40
        assert "gateway_retries_total" in await flow.metrics()


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    async with running_flow(tmp_path) as flow:
        sim = import_batch_sim(flow.sims.import_batch)
        sim.faults = Faults(throttle_rate=1.0, retry_after=1.0)
        rid = await flow.post(BOB, targets=["import_batch"])
        await eventually(lambda: _has_status(sim, 429))
        sim.faults = Faults()
        await flow.wait_for(rid, all_in("confirmed"))
        arrivals = [r.at for r in sim.received.items]
        # The retry waited at least the Retry-After (full jitter alone could be ~0).
        assert arrivals[1] - arrivals[0] >= 0.95


async def _has_status(sim: Any, status: int) -> bool:
    return any(r.status == status for r in sim.received.items)


async def test_an_outage_is_held_and_then_drained(tmp_path: Path) -> None:
    async with running_flow(tmp_path, sim=ADA_FIELDS) as flow:
        sim = omneo_sim(flow.sims.omneo)
        sim.faults = Faults(outage=True)
        rid = await flow.post(ADA, BOB, targets=["omneo", "import_batch"])
        # The other backend is not held up by the dead one.
        await flow.wait_for(rid, lambda s: s[("ada", "import_batch")] == "confirmed")
        await eventually(lambda: _has_status(sim, 503))
        states = await flow.states(rid)
        assert states[("ada", "omneo")] in ("retrying", "in_flight")
        sim.faults = Faults()
        await flow.wait_for(rid, all_in(*DONE))
        await sim.idle()
        emails = {p.fields["email"] for p in sim.profiles.values()}
        assert emails == {"ada@example.com", "bob@example.com"}


async def test_spent_retries_end_dead_and_replay_delivers_them(tmp_path: Path) -> None:
    async with running_flow(tmp_path, env={"GATEWAY_MAX_ATTEMPTS": "2"}) as flow:
        sim = import_batch_sim(flow.sims.import_batch)
        sim.faults = Faults(outage=True)
        rid = await flow.post(BOB, targets=["import_batch"])
        await flow.wait_for(rid, all_in("dead"))
        listed = (
            await flow.http.get("/v1/dead-letters", params={"backend": "import_batch"})
        ).json()
        [dead] = listed["dead_letters"]
        assert dead["external_id"] == "bob" and dead["attempts"] == 2
        assert "gave up after 2 attempts" in dead["last_error"]
        sim.faults = Faults()
        r = await flow.http.post("/v1/dead-letters/replay", json={"backend": "import_batch"})
        assert r.json() == {"requeued": [dead["delivery_id"]], "superseded": []}
        await flow.wait_for(rid, all_in("confirmed"))
        assert (await flow.http.get("/v1/dead-letters")).json() == {"dead_letters": []}


async def test_two_writes_of_one_profile_arrive_in_order(tmp_path: Path) -> None:
    # Attempts to spare: at a 50% error rate, 8 could run out now and then.
    async with running_flow(tmp_path, env={"GATEWAY_MAX_ATTEMPTS": "40"}) as flow:
        sim = import_batch_sim(flow.sims.import_batch)
        sim.faults = Faults(error_rate=0.5)
        ids = []
        for n in range(5):
            ids.append(await flow.post({**BOB, "first_name": f"v{n}"}, targets=["import_batch"]))
        # A write still queued when an earlier one is claimed rides along with
        # it (merged; the carrier, never merged itself, is confirmed too).
        for rid in ids:
            await flow.wait_for(rid, all_in("confirmed", "merged"), within=30)
        sent = [
            item["_fname"]
            for body in bodies(flow.sims.import_batch, "/api/v1.1/profiles/import_batch")
            for item in body["data"]
        ]
        # In order, each version at most once, the newest last.
        assert sent == sorted(set(sent)) and sent[-1] == "v4"
