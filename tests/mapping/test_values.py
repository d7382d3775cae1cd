"""A mapping applied to one profile: exclusions, types, names."""

from __future__ import annotations

import pytest

from gateway.mapping.model import AttributeType
from gateway.mapping.values import (
    Property,
    ValueProblem,
    custom_properties,
    restrict,
    typed,
)
from tests.backends.fakes import profile


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("20240101", None, Property("x", "string", "20240101")),
        ("2024-01-01", None, Property("x", "string", "2024-01-01")),
        (7, None, Property("x", "number", 7)),
        (True, None, Property("x", "boolean", True)),
        ("2024-01-01", "date", Property("x", "date", "2024-01-01")),
        (20240101, "string", Property("x", "string", "20240101")),
        (False, "string", Property("x", "string", "false")),
        ("42", "number", Property("x", "number", 42)),
        ("0.5", "number", Property("x", "number", 0.5)),
        ("true", "boolean", Property("x", "boolean", True)),
    ],
)
def test_a_value_is_typed_by_the_file_or_by_its_own_kind_never_guessed_a_date(
    value: str | int | bool, kind: AttributeType | None, expected: Property
) -> None:
    assert typed("x", value, kind) == expected


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("20240101", "date"),
        ("2024-02-30", "date"),
        ("soon", "number"),
        (True, "number"),
        ("yes", "boolean"),
        (3, "date"),
    ],
)
def test_a_value_its_type_cannot_hold_is_a_problem_of_that_profile(
    value: str | int | bool, kind: AttributeType
) -> None:
    with pytest.raises(ValueProblem, match=f"'x' is typed {kind}"):
        typed("x", value, kind)


def test_restrict_takes_away_excluded_fields_entries_and_consents() -> None:
    p = profile(
        email="a@example.com",
        phone="+61412345678",
        attributes={"tier": "gold", "secret": "x"},
        identities={"shopify_id": "S", "pos_id": "P"},
        consents={"email": True, "sms": False},
        tags=["vip"],
    )
    kept = restrict(p, {"phone", "attributes.secret", "identities.pos_id", "consents.sms", "tags"})
    assert kept.phone is None and kept.phone_country is None
    assert kept.email == "a@example.com"
    assert kept.attributes == {"tier": "gold"}
    assert kept.identities == {"shopify_id": "S"}
    assert kept.consents is not None and (kept.consents.email, kept.consents.sms) == (True, None)
    assert kept.tags is None
    assert kept.external_id == p.external_id


def test_drop_keeps_only_the_attributes_fields_names() -> None:
    p = profile(attributes={"tier": "gold", "other": 1})
    kept = restrict(p, set(), "drop", {"attributes.tier": "Tier"})
    assert kept.attributes == {"tier": "gold"}
    assert restrict(p, set(), "drop", {}).attributes is None


def test_custom_properties_rename_and_add_fields_and_refuse_two_under_one_name() -> None:
    p = profile(birth_date="1990-02-28", attributes={"tier": "gold", "n": 2})
    fields = {"attributes.tier": "Tier", "external_id": "crm_id", "birth_date": "born"}
    assert custom_properties(p, fields, {}) == [
        Property("Tier", "string", "gold"),
        Property("n", "number", 2),
        Property("crm_id", "string", "crm-1"),
        Property("born", "date", "1990-02-28"),
    ]
    clash = profile(attributes={"crm_id": "x"})
    with pytest.raises(ValueProblem, match="both be sent as 'crm_id'"):
        custom_properties(clash, {"external_id": "crm_id"}, {})
