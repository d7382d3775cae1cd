"""docs/mapping.example.toml, loaded by the gateway: each backend's simulator
receives what the file's comments say, one key per test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.backends.ocamba import NEEDS_CONTACT
from gateway.simulators.import_batch import API_ROOT as IMPORT_BATCH_API_ROOT
from gateway.simulators.import_batch import import_batch_sim
from gateway.simulators.omneo import API_ROOT as OMNEO_API_ROOT
from tests.e2e.flow import Flow, all_in, running_flow
from tests.e2e.test_delivery import bodies

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).parent.parent.parent / "docs" / "mapping.example.toml"
JANE = {
    "external_id": "cust-42",
    "email": "Jane@Example.com",
    "phone": "+61 412 345 678",
    "first_name": "Jane",
    "birth_date": "1990-02-28",
    "attributes": {"tier": "gold", "order_no": "20240101", "signup": "2024-01-15"},
    "consents": {"email": True, "sms": False},
}
DONE = ("accepted", "confirmed")
# The import_batch database the example file is written for: its own custom
# fields CRM_ID (the file's field_name) and Tier, and the attributes JANE sends
# under their own names. A real database, like the simulator, refuses a profile
# naming a field it lacks.
EXAMPLE_DATABASE = {"import_batch_fields": ("CRM_ID", "Tier", "order_no", "signup")}
IMPORT_BATCH_PATH = IMPORT_BATCH_API_ROOT + "/v1.1/profiles/import_batch"
OMNEO_BATCH_PATH = OMNEO_API_ROOT + "/v3/profiles/batch"


@contextlib.asynccontextmanager
async def delivered(tmp_path: Path, *profiles: dict[str, Any]) -> AsyncIterator[Flow]:
    """The example file in force; `profiles` written and delivered to every backend."""
    async with example_flow(tmp_path) as flow:
        rid = await flow.post(*profiles)
        await flow.wait_for(rid, all_in(*DONE, "failed"))
        assert await failures(flow, rid) == {}
        yield flow


def example_flow(tmp_path: Path) -> contextlib.AbstractAsyncContextManager[Flow]:
    """The gateway with the example file, the simulators with its database."""
    return running_flow(tmp_path, env={"GATEWAY_MAPPING_FILE": str(EXAMPLE)}, sim=EXAMPLE_DATABASE)


async def failures(flow: Flow, rid: str) -> dict[tuple[str, str], str | None]:
    """(external_id, backend) -> last error of each failed delivery of the request."""
    view = (await flow.http.get(f"/v1/requests/{rid}")).json()
    return {
        (p["external_id"], d["backend"]): d["last_error"]
        for p in view["profiles"]
        for d in p["deliveries"]
        if d["state"] == "failed"
    }


def import_batch_request(flow: Flow) -> dict[str, Any]:
    [body] = bodies(flow.sims.import_batch, IMPORT_BATCH_PATH)
    assert isinstance(body, dict)
    return body


def omneo_profile(flow: Flow) -> dict[str, Any]:
    [batch] = bodies(flow.sims.omneo, OMNEO_BATCH_PATH)
    [profile] = batch["profiles"]
    assert isinstance(profile, dict)
    return profile


async def test_import_batch_matching_custom_matches_on_the_databases_own_field(
    tmp_path: Path,
) -> None:
    async with delivered(tmp_path, JANE) as flow:
        body = import_batch_request(flow)
        assert (body["matching"], body["field_name"]) == ("custom", "CRM_ID")
        # A second write of the person finds the profile by CRM_ID instead of creating one.
        rid = await flow.post({**JANE, "first_name": "Janet"})
        # Ocamba cannot update a known profile's name: `unsupported`, nothing sent.
        states = await flow.wait_for(rid, all_in(*DONE, "unsupported"))
        assert states[("cust-42", "import_batch")] == "confirmed"
        assert states[("cust-42", "ocamba")] == "unsupported"
        [stored] = import_batch_sim(flow.sims.import_batch).store.profiles.values()
        assert stored.fields["CRM_ID"] == "cust-42"
        assert stored.fields["_fname"] == "Janet"
        assert "external_id" not in stored.fields


async def test_import_batch_vendor_switches_are_sent_as_set(tmp_path: Path) -> None:
    async with delivered(tmp_path, JANE) as flow:
        body = import_batch_request(flow)
        assert body["skip_triggers"] is True
        assert body["skip_invalid_subscriptions"] is True
        assert body["detect_geo"] is False


async def test_import_batch_fields_go_under_the_names_the_file_gives(tmp_path: Path) -> None:
    async with delivered(tmp_path, JANE) as flow:
        [data] = import_batch_request(flow)["data"]
        assert data["CRM_ID"] == "cust-42"  # external_id = "CRM_ID"
        assert data["_bdate"] == "1990-02-28"  # birth_date = "_bdate"
        assert data["Tier"] == "gold"  # "attributes.tier" = "Tier"
        assert "external_id" not in data and "tier" not in data
        # Unlisted fields keep today's names; unlisted attributes their own.
        assert {k: data[k] for k in ("_fname", "email", "phone", "order_no", "signup")} == {
            "_fname": "Jane",
            "email": "jane@example.com",
            "phone": "+61412345678",
            "order_no": "20240101",
            "signup": "2024-01-15",
        }


async def test_import_batch_consents_become_subscriptions(tmp_path: Path) -> None:
    async with delivered(tmp_path, JANE) as flow:
        [data] = import_batch_request(flow)["data"]
        assert data["subscriptions"] == [
            {
                "channel": "email",
                "email": "jane@example.com",
                "resource_id": 28,
                "status": "subscribed",
            },
            {
                "channel": "sms",
                "phone": "+61412345678",
                "resource_id": 29,
                "status": "unsubscribed",
            },
        ]


async def test_omneo_matches_on_the_crm_id_identity_and_its_webhook_confirms(
    tmp_path: Path,
) -> None:
    async with delivered(tmp_path, JANE) as flow:
        [batch] = bodies(flow.sims.omneo, OMNEO_BATCH_PATH)
        assert batch["match_criteria"] == "crm_id"
        assert omneo_profile(flow)["identities"] == [
            {"handle": "crm_id", "identifier": "cust-42", "is_active": True}
        ]
        rid = await flow.post({**JANE, "external_id": "cust-43", "email": "other@example.com"})
        # Confirmed by Omneo's webhook, found by the crm_id identity.
        states = await flow.wait_for(rid, lambda s: s.get(("cust-43", "omneo")) == "confirmed")
        assert states[("cust-43", "omneo")] == "confirmed"


async def test_omneo_custom_attributes_go_in_the_files_namespace(tmp_path: Path) -> None:
    async with delivered(tmp_path, JANE) as flow:
        namespaces = {a["namespace"] for a in omneo_profile(flow)["custom_attributes"]}
        assert namespaces == {"crm"}


async def test_omneo_attribute_types_are_the_files_and_strings_stay_strings(
    tmp_path: Path,
) -> None:
    async with delivered(tmp_path, JANE) as flow:
        profile = omneo_profile(flow)
        # Custom attributes go as the doc's only type, `string`, the date-like
        # "20240101" included: no type is guessed from a value.
        types = {a["handle"]: (a["type"], a["value"]) for a in profile["custom_attributes"]}
        assert types == {"tier": ("string", "gold"), "order_no": ("string", "20240101")}
        # The file types signup `date`: it goes to the doc's place for dates.
        assert profile["dates_attributes"] == [
            {"handle": "signup", "name": "signup", "date": "2024-01-15"}
        ]


async def test_ocamba_never_gets_the_excluded_phone(tmp_path: Path) -> None:
    phone_only = {"external_id": "p-1", "phone": "+61 412 345 679"}
    async with example_flow(tmp_path) as flow:
        rid = await flow.post(JANE, phone_only)
        await flow.wait_for(rid, all_in(*DONE, "failed"))
        creates = bodies(flow.sims.ocamba, "/v1/hood/profiles")
        assert creates == [{"email": "jane@example.com", "full_name": "Jane"}]
        view = (await flow.http.get(f"/v1/requests/{rid}")).json()
        [ocamba] = [
            d
            for p in view["profiles"]
            if p["external_id"] == "p-1"
            for d in p["deliveries"]
            if d["backend"] == "ocamba"
        ]
        assert (ocamba["state"], ocamba["last_error"]) == ("failed", NEEDS_CONTACT)
        received = flow.sims.ocamba.state.sim.received.items
        assert all("+61412345679" not in str(r.body) for r in received)


async def test_ocamba_attribute_types_are_the_files(tmp_path: Path) -> None:
    not_a_date = {
        "external_id": "cust-44",
        "email": "sam@example.com",
        "attributes": {"tier": "gold", "signup": "soon"},
    }
    async with example_flow(tmp_path) as flow:
        rid = await flow.post(JANE, not_a_date)
        states = await flow.wait_for(rid, all_in(*DONE, "failed"))
        # The file types signup `date`: a value that is not one fails that
        # profile's Ocamba delivery, before anything is sent for it (Omneo's
        # too: its section types signup the same) ...
        reason = "'signup' is typed date by the mapping file, and this profile's value is not one"
        assert await failures(flow, rid) == {
            ("cust-44", "ocamba"): f"ocamba: {reason}",
            ("cust-44", "omneo"): f"omneo: {reason}",
        }
        assert states[("cust-42", "ocamba")] == "accepted"
        creates = bodies(flow.sims.ocamba, "/v1/hood/profiles")
        assert creates == [{"email": "jane@example.com", "full_name": "Jane"}]
        # ... and one that is goes out as the doc's only type, `string`, as
        # do the file's `string`s (the date-like order_no among them).
        [imported] = bodies(flow.sims.ocamba, "/v1/hood/profiles/import")
        [entry] = imported["profiles"]
        assert entry["custom_properties"] == {
            "tier": {"type": "string", "value": "gold"},
            "order_no": {"type": "string", "value": "20240101"},
            "signup": {"type": "string", "value": "2024-01-15"},
        }
