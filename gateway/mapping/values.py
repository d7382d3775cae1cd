"""A mapping applied to one profile: what is left of it, and its values typed.

The adapters call these; a `ValueProblem` is about one profile (a value its
type cannot hold, two values under one name), so it fails that delivery only.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from typing import Any, Final, NamedTuple

import msgspec

from gateway.mapping.model import AttributeType, UnmappedAttributes
from gateway.schema import AttributeValue, Consents, NormalizedProfile

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")


# The only property type Ocamba's and Omneo's docs name (seeds/000's import
# examples, even for a number-like "1234567890"; seeds/002's
# `custom_attributes[].type`): a real account that follows its doc refuses any
# other. A file's `attribute_types` say how the gateway checks a value, not
# what goes on the wire.
WIRE_TYPE: Final = "string"


def as_text(value: AttributeValue) -> str:
    """A value as the text a `string` property carries; booleans as JSON spells
    them, so `true` reads the same in every backend."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ValueProblem(Exception):
    """This profile cannot be sent as the mapping says; the message says why."""


class Property(NamedTuple):
    name: str
    type: AttributeType
    value: AttributeValue


def restrict(
    profile: NormalizedProfile,
    exclude: Collection[str],
    unmapped: UnmappedAttributes = "send",
    fields: Mapping[str, str] | None = None,
) -> NormalizedProfile:
    """The profile without what this backend must not get: excluded fields and,
    with `unmapped = "drop"`, attributes `fields` does not name."""
    if not exclude and unmapped == "send":
        return profile
    changes: dict[str, Any] = {}
    for name in exclude:
        # external_id is the gateway's key: excluding it only keeps it out of
        # the body, which the resolved `fields` tables already do.
        if "." not in name and name != "external_id":
            changes[name] = None
            if name == "phone":
                changes["phone_country"] = None
    if profile.attributes and "attributes" not in changes:
        keep = {
            name: value
            for name, value in profile.attributes.items()
            if f"attributes.{name}" not in exclude
            and (unmapped == "send" or f"attributes.{name}" in (fields or {}))
        }
        changes["attributes"] = keep or None
    if profile.identities and "identities" not in changes:
        ids = {h: i for h, i in profile.identities.items() if f"identities.{h}" not in exclude}
        changes["identities"] = ids or None
    if profile.consents is not None and "consents" not in changes:
        email = None if "consents.email" in exclude else profile.consents.email
        sms = None if "consents.sms" in exclude else profile.consents.sms
        changes["consents"] = None if email is None and sms is None else Consents(email, sms)
    return msgspec.structs.replace(profile, **changes)


def source_value(profile: NormalizedProfile, source: str) -> AttributeValue | None:
    """The value a source names in this profile, a date as its ISO form."""
    kind, _, name = source.partition(".")
    if kind == "attributes" and name:
        return (profile.attributes or {}).get(name)
    if kind == "identities" and name:
        return (profile.identities or {}).get(name)
    value = getattr(profile, source)
    if isinstance(value, dt.date):
        return value.isoformat()
    assert value is None or isinstance(value, str)
    return value


def natural_type(value: AttributeValue) -> AttributeType:
    """A value's type when the file names none. A string stays `string` even
    when it reads as a date: "20240101" is as likely an order number."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def typed(name: str, value: AttributeValue, kind: AttributeType | None) -> Property:
    """`value` as `kind`, converted only where nothing is lost."""
    if kind is None:
        return Property(name, natural_type(value), value)
    if kind == "string":
        return Property(name, kind, as_text(value))
    if kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Property(name, kind, value)
        if isinstance(value, str) and _NUMBER.fullmatch(value):
            number = float(value)
            return Property(name, kind, int(number) if number.is_integer() else number)
    if kind == "boolean":
        if isinstance(value, bool):
            return Property(name, kind, value)
        if value in ("true", "false"):
            return Property(name, kind, value == "true")
    if kind == "date" and isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return Property(name, kind, value)
    raise ValueProblem(
        f"'{name}' is typed {kind} by the mapping file, and this profile's value is not one"
    )


def custom_properties(
    profile: NormalizedProfile,
    fields: Mapping[str, str],
    types: Mapping[str, AttributeType],
) -> list[Property]:
    """Custom properties (Ocamba) or attributes (Omneo): the profile's
    attributes, renamed by `fields`, then the other sources `fields` lists."""
    properties: list[Property] = []
    owner: dict[str, str] = {}

    def add(source: str, prop: Property) -> None:
        if prop.name in owner:
            raise ValueProblem(
                f"{source} and {owner[prop.name]} would both be sent as '{prop.name}';"
                " rename one (the mapping file's fields)"
            )
        owner[prop.name] = source
        properties.append(prop)

    for name, value in (profile.attributes or {}).items():
        source = f"attributes.{name}"
        add(source, typed(fields.get(source, name), value, types.get(name)))
    for source, target in fields.items():
        if source.startswith("attributes."):
            continue
        scalar = source_value(profile, source)
        if scalar is not None:
            add(source, Property(target, "date" if source == "birth_date" else "string", scalar))
    return properties
