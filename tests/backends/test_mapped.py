"""The adapters with a mapping: exclusions, names, types and the per-profile
failures a mapping can cause, against scripted backends."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from gateway.backends.base import Outcome
from gateway.backends.import_batch import IMPORT_PATH as IB_PATH
from gateway.backends.import_batch import ImportBatchAdapter
from gateway.backends.ocamba import CREATE_PATH, IMPORT_PATH, OcambaAdapter
from gateway.backends.omneo import OmneoAdapter
from gateway.config import Settings
from gateway.mapping.model import ImportBatchMapping, OcambaMapping, OmneoMapping, Subscription
from tests.backends.fakes import Backend, item, sender

pytestmark = pytest.mark.anyio


def reply(request: httpx.Request) -> httpx.Response:
    if request.url.path == CREATE_PATH:
        return httpx.Response(201, json={"id": "9001"})
    if request.url.path == IB_PATH:
        data = msgspec.json.decode(request.content)["data"]
        return httpx.Response(
            200, json={"error": 0, "result": [{"error": 0, "profile_id": "p"} for _ in data]}
        )
    return httpx.Response(202, json={"data": {"batch_id": "b"}})


async def test_ocamba_fails_a_value_its_type_cannot_hold_before_creating_anyone() -> None:
    backend = Backend(reply)
    mapping = OcambaMapping(attribute_types={"signup": "date"})
    ocamba = OcambaAdapter(Settings(), sender("ocamba", backend.client()), mapping=mapping)
    outcomes = await ocamba.deliver(
        [
            item(1, email="a@example.com", attributes={"signup": "soon"}),
            item(2, email="b@example.com", attributes={"signup": "2024-01-15"}),
        ]
    )
    assert outcomes[0] == Outcome(
        1,
        "failed",
        "ocamba: 'signup' is typed date by the mapping file, and this profile's value is not one",
    )
    assert outcomes[1].state == "accepted"
    assert backend.bodies(CREATE_PATH) == [{"email": "b@example.com"}]


async def test_ocamba_sends_mapped_fields_as_properties_and_drops_unlisted_attributes() -> None:
    backend = Backend(reply)
    mapping = OcambaMapping(
        fields={"external_id": "crm_id", "attributes.tier": "Tier"},
        unmapped_attributes="drop",
        exclude=frozenset({"first_name"}),
    )
    ocamba = OcambaAdapter(Settings(), sender("ocamba", backend.client()), mapping=mapping)
    [outcome] = await ocamba.deliver(
        [
            item(
                1,
                email="a@example.com",
                first_name="A",
                last_name="B",
                attributes={"tier": "gold", "secret": "x"},
            )
        ]
    )
    assert outcome.state == "accepted"
    assert backend.bodies(CREATE_PATH) == [{"email": "a@example.com", "full_name": "B"}]
    [body] = backend.bodies(IMPORT_PATH)
    assert body["profiles"][0]["custom_properties"] == {
        "Tier": {"type": "string", "value": "gold"},
        "crm_id": {"type": "string", "value": "crm-1"},
    }


async def test_omneo_fails_only_the_profile_whose_value_does_not_fit() -> None:
    backend = Backend(reply)
    mapping = OmneoMapping(attribute_types={"n": "number"})
    omneo = OmneoAdapter(Settings(), sender("omneo", backend.client()), mapping=mapping)
    outcomes = await omneo.deliver(
        [
            item(1, email="a@example.com", attributes={"n": "many"}),
            item(2, email="b@example.com", attributes={"n": "3"}),
        ]
    )
    assert [o.state for o in outcomes] == ["failed", "accepted"]
    assert "'n' is typed number" in (outcomes[0].error or "")
    [batch] = backend.bodies()
    [profile] = batch["profiles"]
    # Checked as a number, sent as the doc's only type with the value as text.
    assert profile["custom_attributes"] == [
        {"namespace": "gateway", "handle": "n", "type": "string", "value": "3"}
    ]


async def test_omneo_match_key_comes_from_the_mapped_identity() -> None:
    backend = Backend(reply)
    mapping = OmneoMapping(match_criteria="crm_id", identities={"crm_id": "external_id"})
    omneo = OmneoAdapter(Settings(), sender("omneo", backend.client()), mapping=mapping)
    [outcome] = await omneo.deliver([item(1, identities={"crm_id": "old"})])
    assert outcome.match_key == "crm_id:crm-1"
    [batch] = backend.bodies()
    assert batch["profiles"][0]["identities"] == [
        {"handle": "crm_id", "identifier": "crm-1", "is_active": True}
    ]


async def test_import_batch_subscriptions_only_for_consents_with_an_address() -> None:
    backend = Backend(reply)
    mapping = ImportBatchMapping(
        subscriptions={
            "email": Subscription(resource_id=28, priority=1, cats=("news",)),
            "sms": Subscription(resource_id=29),
        }
    )
    ib = ImportBatchAdapter(Settings(), sender("import_batch", backend.client()), mapping=mapping)
    await ib.deliver(
        [
            item(1, email="a@example.com", consents={"email": False, "sms": True}),
            item(2, email="b@example.com", consents={}),
        ]
    )
    [body] = backend.bodies(IB_PATH)
    assert body["data"][0]["subscriptions"] == [
        {
            "channel": "email",
            "email": "a@example.com",
            "resource_id": 28,
            "status": "unsubscribed",
            "priority": 1,
            "cats": ["news"],
        }
    ]
    assert "subscriptions" not in body["data"][1]


async def test_import_batch_refuses_an_attribute_landing_on_a_mapped_name() -> None:
    backend = Backend(reply)
    fields = {"email": "email", "external_id": "CRM_ID"}
    mapping = ImportBatchMapping(matching="custom", field_name="CRM_ID", fields=fields)
    ib = ImportBatchAdapter(Settings(), sender("import_batch", backend.client()), mapping=mapping)
    outcomes = await ib.deliver(
        [
            item(1, email="a@example.com", attributes={"CRM_ID": "x"}),
            item(2, email="b@example.com", attributes={"tier": "gold"}),
        ]
    )
    assert outcomes[0].state == "failed"
    assert "attribute 'CRM_ID' would overwrite" in (outcomes[0].error or "")
    [body] = backend.bodies(IB_PATH)
    assert (body["matching"], body["field_name"]) == ("custom", "CRM_ID")
    assert body["data"] == [{"email": "b@example.com", "CRM_ID": "crm-2", "tier": "gold"}]
