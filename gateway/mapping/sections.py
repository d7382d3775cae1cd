"""The three backend sections of a mapping file, checked and resolved.

Each function reads one section with a `Checker` (which collects the problems)
and returns that backend's resolved mapping. Given an empty section it returns
today's behaviour, with `defaults` (the environment's settings) filling in what
a file may also set.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from gateway.mapping.checks import Checker, is_excluded, join
from gateway.mapping.model import (
    AttributeType,
    ImportBatchMapping,
    OcambaMapping,
    OmneoMapping,
    Subscription,
    UnmappedAttributes,
)
from gateway.mapping.rules import (
    CUSTOM_MATCHING,
    EMAIL_MATCHING,
    IMPORT_BATCH_DEFAULT_FIELDS,
    IMPORT_BATCH_GATEWAY_FIELDS,
    IMPORT_BATCH_MATCHING,
    OCAMBA_NATIVE,
    OCAMBA_TYPES,
    OMNEO_NATIVE,
    OMNEO_TYPES,
    PHONE_MATCHING,
)
from gateway.schema import SCALAR_FIELDS

UNMAPPED_CHOICES = ("send", "drop")


def _fields(
    c: Checker,
    section: dict[str, Any],
    path: str,
    excluded: Collection[str],
    *,
    scalars: Collection[str],
    identities: bool,
) -> dict[str, str]:
    """`fields`: source -> name, checked; one name may take one source only."""
    fields: dict[str, str] = {}
    table_path = join(path, "fields")
    for source, target in c.string_table(section, "fields", path).items():
        key_path = join(table_path, source)
        if not c.source(source, key_path, scalars=scalars, identities=identities):
            continue
        if is_excluded(source, excluded):
            c.fail(key_path, f"'{source}' is excluded from this backend (exclude)")
            continue
        fields[source] = target
    return fields


def _duplicates(c: Checker, path: str, table: dict[str, str], blame: Collection[str]) -> None:
    """Two sources sent under one name: the later (of those in `blame`) is reported."""
    owner: dict[str, str] = {}
    for source, target in table.items():
        if target in owner:
            culprit = source if source in blame else owner[target]
            other = owner[target] if culprit == source else source
            c.fail(join(path, culprit), f"'{target}' is already where {other} goes")
        else:
            owner[target] = source


def _types(
    c: Checker, section: dict[str, Any], path: str, allowed: Collection[str], backend: str
) -> dict[str, AttributeType]:
    types: dict[str, AttributeType] = {}
    table_path = join(path, "attribute_types")
    for name, value in c.string_table(section, "attribute_types", path).items():
        if value in allowed:
            types[name] = cast(AttributeType, value)
        else:
            c.fail(
                join(table_path, name),
                f"type '{value}' is not one {backend} takes: {', '.join(sorted(allowed))}",
            )
    return types


def _unmapped(c: Checker, section: dict[str, Any], path: str) -> UnmappedAttributes:
    value = c.choice(section, "unmapped_attributes", path, UNMAPPED_CHOICES)
    return cast(UnmappedAttributes, value or "send")


OCAMBA_KEYS = ("exclude", "fields", "attribute_types", "unmapped_attributes", "resend")


def ocamba(c: Checker, section: dict[str, Any]) -> OcambaMapping:
    path = "ocamba"
    c.keys(section, path, OCAMBA_KEYS)
    excluded = c.exclusions(section, path)
    if is_excluded("email", excluded) and is_excluded("phone", excluded):
        c.fail(
            join(path, "exclude"),
            "Ocamba creates a profile only from an email or a phone; excluding both"
            " leaves it nothing to create one with",
        )
    scalars = [f for f in SCALAR_FIELDS if f not in OCAMBA_NATIVE]
    fields = _fields(c, section, path, excluded, scalars=scalars, identities=True)
    _duplicates(c, join(path, "fields"), fields, fields)
    return OcambaMapping(
        exclude=frozenset(excluded),
        fields=fields,
        attribute_types=_types(c, section, path, OCAMBA_TYPES, "Ocamba"),
        unmapped_attributes=_unmapped(c, section, path),
        resend=bool(c.boolean(section, "resend", path)),
    )


OMNEO_KEYS = (
    "match_criteria",
    "attribute_namespace",
    "identities",
    "exclude",
    "fields",
    "attribute_types",
    "unmapped_attributes",
    "resend",
)


def omneo(c: Checker, section: dict[str, Any], default_match_criteria: str) -> OmneoMapping:
    path = "omneo"
    c.keys(section, path, OMNEO_KEYS)
    excluded = c.exclusions(section, path)
    identities: dict[str, str] = {}
    table_path = join(path, "identities")
    for handle, source in c.string_table(section, "identities", path).items():
        key_path = join(table_path, handle)
        if not c.source(source, key_path, scalars=SCALAR_FIELDS, identities=False):
            continue
        if is_excluded(source, excluded):
            c.fail(key_path, f"'{source}' is excluded from Omneo (exclude)")
            continue
        identities[handle] = source
    match_criteria = c.string(section, "match_criteria", path) or default_match_criteria
    needed = "email" if match_criteria == "email" else f"identities.{match_criteria}"
    if match_criteria not in identities and is_excluded(needed, excluded):
        c.fail(
            join(path, "exclude"),
            f"match_criteria '{match_criteria}' needs {needed}, which is excluded:"
            " no profile could be matched",
        )
    scalars = [f for f in SCALAR_FIELDS if f not in OMNEO_NATIVE]
    fields = _fields(c, section, path, excluded, scalars=scalars, identities=False)
    _duplicates(c, join(path, "fields"), fields, fields)
    return OmneoMapping(
        match_criteria=match_criteria,
        attribute_namespace=c.string(section, "attribute_namespace", path) or "gateway",
        identities=identities,
        exclude=frozenset(excluded),
        fields=fields,
        attribute_types=_types(c, section, path, OMNEO_TYPES, "Omneo"),
        unmapped_attributes=_unmapped(c, section, path),
        resend=bool(c.boolean(section, "resend", path)),
    )


IMPORT_BATCH_KEYS = (
    "matching",
    "field_name",
    "resource_id",
    "skip_triggers",
    "skip_invalid_subscriptions",
    "detect_geo",
    "exclude",
    "fields",
    "subscriptions",
    "unmapped_attributes",
    "resend",
)
SUBSCRIPTION_KEYS = ("resource_id", "priority", "cats")
ADDRESS_OF: dict[str, str] = {"email": "email", "sms": "phone"}


def import_batch(c: Checker, section: dict[str, Any], default_matching: str) -> ImportBatchMapping:
    path = "import_batch"
    c.keys(section, path, IMPORT_BATCH_KEYS)
    excluded = c.exclusions(section, path)
    matching = c.choice(section, "matching", path, IMPORT_BATCH_MATCHING) or default_matching
    given = _fields(c, section, path, excluded, scalars=SCALAR_FIELDS, identities=True)
    fields_path = join(path, "fields")
    for source, target in given.items():
        if target in IMPORT_BATCH_GATEWAY_FIELDS:
            c.fail(join(fields_path, source), f"'{target}' is a field the gateway sets itself")
    fields = {s: t for s, t in IMPORT_BATCH_DEFAULT_FIELDS.items() if not is_excluded(s, excluded)}
    fields.update(given)
    _duplicates(c, fields_path, fields, given)
    _needed_for_matching(c, matching, fields, excluded)
    field_name = c.string(section, "field_name", path)
    if field_name is not None and matching not in CUSTOM_MATCHING:
        c.fail(
            join(path, "field_name"),
            f"only sent with matching custom or custom_sub (matching is '{matching}')",
        )
    field_name = field_name or "external_id"
    if matching in CUSTOM_MATCHING and field_name not in fields.values():
        c.fail(
            join(path, "field_name"),
            f"matching '{matching}' looks profiles up by '{field_name}', but no field is"
            f' sent under that name; map one in [import_batch.fields], e.g. external_id = "'
            f'{field_name}"',
        )
    return ImportBatchMapping(
        matching=matching,
        field_name=field_name,
        resource_id=c.integer(section, "resource_id", path),
        skip_triggers=c.boolean(section, "skip_triggers", path),
        skip_invalid_subscriptions=c.boolean(section, "skip_invalid_subscriptions", path),
        detect_geo=c.boolean(section, "detect_geo", path),
        exclude=frozenset(excluded),
        fields=fields,
        subscriptions=_subscriptions(c, section, path, excluded),
        unmapped_attributes=_unmapped(c, section, path),
        resend=bool(c.boolean(section, "resend", path)),
    )


def _needed_for_matching(
    c: Checker, matching: str, fields: dict[str, str], excluded: dict[str, str]
) -> None:
    """The matching modes that read `email` or `phone` need them under those names."""
    needs = {"email"} if matching in EMAIL_MATCHING else set()
    needs |= {"phone"} if matching in PHONE_MATCHING else set()
    for name in needs:
        if fields.get(name) == name:
            continue
        where = excluded.get(name) or excluded.get(name.partition(".")[0])
        if where is None:
            c.fail(
                join("import_batch.fields", name),
                f"matching '{matching}' reads the {name} from the field '{name}'; keep that name",
            )
        else:
            c.fail(where, f"matching '{matching}' needs the {name}, which this excludes")
    sends = {name for name in ("email", "phone") if fields.get(name) == name}
    if matching.startswith("email_phone") and not sends:
        c.fail(
            "import_batch.matching",
            f"'{matching}' needs the email or the phone under their own names,"
            " and neither is sent so",
        )


def _subscriptions(
    c: Checker,
    section: dict[str, Any],
    path: str,
    excluded: dict[str, str],
) -> dict[str, Subscription]:
    table = c.table(section, "subscriptions", path)
    table_path = join(path, "subscriptions")
    c.keys(table, table_path, tuple(ADDRESS_OF))
    subscriptions: dict[str, Subscription] = {}
    for channel in ("email", "sms"):
        if channel not in table:
            continue
        entry_path = join(table_path, channel)
        entry = c.table(table, channel, table_path)
        c.keys(entry, entry_path, SUBSCRIPTION_KEYS)
        resource_id = c.integer(entry, "resource_id", entry_path)
        if resource_id is None and "resource_id" not in entry:
            c.fail(join(entry_path, "resource_id"), "required: the resource to subscribe to")
        cats = tuple(cat for _, cat in c.strings(entry, "cats", entry_path)) or None
        priority = c.integer(entry, "priority", entry_path)
        address = ADDRESS_OF[channel]
        if is_excluded(f"consents.{channel}", excluded):
            c.fail(entry_path, f"consents.{channel} is excluded from import_batch (exclude)")
        elif is_excluded(address, excluded):
            c.fail(entry_path, f"needs the {address}, which import_batch.exclude keeps away")
        if resource_id is not None:
            subscriptions[channel] = Subscription(
                resource_id=resource_id, priority=priority, cats=cats
            )
    return subscriptions
