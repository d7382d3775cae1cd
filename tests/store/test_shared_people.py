"""`external_id` names one person for every app (README, "Who is a person"):
two apps writing the same id write the same person, so the id a backend gave
that person serves both apps' writes, and reads and erasure cover both. Here
on both engines, through the store the API uses."""

from __future__ import annotations

import time

import pytest

from gateway.schema import Backend, NormalizedProfile
from gateway.store.base import DeliveryResult, NewRequest, Store

pytestmark = pytest.mark.anyio


async def write(store: Store, request_id: str, app: str, first_name: str) -> None:
    targets: list[Backend] = ["ocamba"]
    await store.accept(
        NewRequest(
            request_id=request_id,
            app=app,
            targets=targets,
            profiles=[
                NormalizedProfile(
                    external_id="cust-7", email="pat@example.com", first_name=first_name
                )
            ],
            received_at=time.time(),
        )
    )


async def test_two_apps_writing_one_external_id_share_its_backend_ids(store: Store) -> None:
    await write(store, "r-crm", "crm", "Pat")
    [first] = await store.claim("ocamba", 10, "w", 60)
    assert first.backend_id is None  # nobody has created the person at Ocamba yet
    await store.record("w", [DeliveryResult(first.delivery_id, "confirmed", backend_id="oc-1")])

    await write(store, "r-shop", "shop", "Patricia")
    [second] = await store.claim("ocamba", 10, "w", 60)
    # The shop's write updates the Ocamba profile the crm's write created:
    # no second Ocamba profile for one person.
    assert (second.external_id, second.backend_id) == ("cust-7", "oc-1")
    assert second.profile.first_name == "Patricia"

    view = await store.get_profile("cust-7")
    assert view is not None
    assert view.last_request_id == "r-shop"  # the latest write, whichever app made it
    assert view.backend_ids == {"ocamba": "oc-1"}


async def test_an_erasure_removes_what_every_app_wrote(store: Store) -> None:
    await write(store, "r-crm", "crm", "Pat")
    await write(store, "r-shop", "shop", "Patricia")
    erasure = await store.erase_profile("cust-7")
    assert erasure is not None and erasure.writes_erased == 2
    view = await store.get_profile("cust-7")
    assert view is not None and view.profile is None
