"""The merged payload of a person's queued writes (gateway/store/merge.py)."""

from __future__ import annotations

import datetime as dt

from gateway.schema import Address, Consents, NormalizedProfile
from gateway.store.merge import merged, overlay


def test_a_field_a_later_write_leaves_out_keeps_the_earlier_value() -> None:
    base = NormalizedProfile("p", email="a@x.test", first_name="Ann", company="Acme")
    out = overlay(base, NormalizedProfile("p", first_name="Anna"))
    assert out == NormalizedProfile("p", email="a@x.test", first_name="Anna", company="Acme")


def test_a_field_a_later_write_carries_replaces_the_earlier_value() -> None:
    base = NormalizedProfile("p", email="a@x.test", birth_date=dt.date(1990, 1, 1), gender="female")
    later = NormalizedProfile("p", email="b@x.test", birth_date=dt.date(1991, 2, 2))
    out = overlay(base, later)
    assert (out.email, out.birth_date, out.gender) == ("b@x.test", dt.date(1991, 2, 2), "female")


def test_attributes_and_identities_merge_key_by_key() -> None:
    base = NormalizedProfile(
        "p", attributes={"tier": "gold", "since": 2020}, identities={"shopify": "1"}
    )
    later = NormalizedProfile(
        "p", attributes={"tier": "silver", "vip": True}, identities={"pos": "9"}
    )
    out = overlay(base, later)
    assert out.attributes == {"tier": "silver", "since": 2020, "vip": True}
    assert out.identities == {"shopify": "1", "pos": "9"}
    # The inputs are left as they were.
    assert base.attributes == {"tier": "gold", "since": 2020}


def test_consents_merge_channel_by_channel() -> None:
    base = NormalizedProfile("p", consents=Consents(email=True, sms=False))
    out = overlay(base, NormalizedProfile("p", consents=Consents(sms=True)))
    assert out.consents == Consents(email=True, sms=True)
    only_email = NormalizedProfile("p", consents=Consents(email=False))
    assert overlay(NormalizedProfile("p"), only_email) == only_email


def test_lists_are_replaced_whole() -> None:
    base = NormalizedProfile("p", tags=["a", "b"], addresses=[Address(city="Perth")])
    out = overlay(base, NormalizedProfile("p", tags=["c"]))
    assert out.tags == ["c"]
    assert out.addresses == [Address(city="Perth")]
    assert overlay(base, NormalizedProfile("p", tags=[])).tags == []


def test_the_phone_country_travels_with_the_phone() -> None:
    base = NormalizedProfile("p", phone="+61412345678", phone_country="AU")
    # A later write without a phone keeps both.
    assert overlay(base, NormalizedProfile("p", first_name="A")).phone_country == "AU"
    # A later phone brings its own country, even none.
    out = overlay(base, NormalizedProfile("p", phone="+4930123456", phone_country="DE"))
    assert (out.phone, out.phone_country) == ("+4930123456", "DE")
    assert overlay(base, NormalizedProfile("p", phone="+80012345678")).phone_country is None


def test_writes_are_overlaid_in_write_order() -> None:
    writes = [
        NormalizedProfile("p", first_name=f"v{i}", attributes={f"k{i}": i}) for i in range(10)
    ]
    out = merged(writes[0], writes[1:])
    assert out.first_name == "v9"
    assert out.attributes == {f"k{i}": i for i in range(10)}
    assert merged(writes[0], []) is writes[0]
