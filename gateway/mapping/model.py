"""The mapping in force, resolved: what each adapter is given.

Every table is complete (defaults merged in, excluded sources taken out), so an
adapter reads it as it is and never falls back on a default of its own. A
source is a normalized field name, `attributes.NAME` or `identities.HANDLE`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.mapping.rules import DEFAULT_OMNEO_NAMESPACE, IMPORT_BATCH_DEFAULT_FIELDS

UnmappedAttributes = Literal["send", "drop"]
AttributeType = Literal["string", "number", "boolean", "date"]


class OcambaMapping(msgspec.Struct, frozen=True, kw_only=True):
    # Send every field of every write, even those the backend already has.
    resend: bool = False
    exclude: frozenset[str] = frozenset()
    # source -> custom property name; attributes not listed keep their name.
    fields: dict[str, str] = {}
    # attribute name (as in the profile) -> type; unlisted: by the value's kind.
    attribute_types: dict[str, AttributeType] = {}
    unmapped_attributes: UnmappedAttributes = "send"


class OmneoMapping(msgspec.Struct, frozen=True, kw_only=True):
    # Send every field of every write, even those the backend already has.
    resend: bool = False
    match_criteria: str = "email"
    attribute_namespace: str = DEFAULT_OMNEO_NAMESPACE
    # identity handle -> source, sent besides the profile's own `identities`.
    identities: dict[str, str] = {}
    exclude: frozenset[str] = frozenset()
    fields: dict[str, str] = {}  # source -> custom attribute handle
    attribute_types: dict[str, AttributeType] = {}
    unmapped_attributes: UnmappedAttributes = "send"


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """One `subscriptions[]` entry per consent channel (seeds/003)."""

    resource_id: int
    priority: int | None = None
    cats: tuple[str, ...] | None = None


class ImportBatchMapping(msgspec.Struct, frozen=True, kw_only=True):
    # Send every field of every write, even those the backend already has.
    resend: bool = False
    matching: str = "email"
    field_name: str = "external_id"  # sent only with custom matching
    resource_id: int | None = None
    # None: not sent, the vendor's default (false) applies.
    skip_triggers: bool | None = None
    skip_invalid_subscriptions: bool | None = None
    detect_geo: bool | None = None
    exclude: frozenset[str] = frozenset()
    # source -> data item field; unlisted attributes go under their own name.
    fields: dict[str, str] = msgspec.field(
        default_factory=lambda: dict(IMPORT_BATCH_DEFAULT_FIELDS)
    )
    subscriptions: dict[str, Subscription] = {}  # "email" or "sms" -> its resource
    unmapped_attributes: UnmappedAttributes = "send"


class Mappings(msgspec.Struct, frozen=True, kw_only=True):
    ocamba: OcambaMapping = OcambaMapping()
    omneo: OmneoMapping = OmneoMapping()
    import_batch: ImportBatchMapping = ImportBatchMapping()
    source: str | None = None  # the file it came from; None: the defaults
