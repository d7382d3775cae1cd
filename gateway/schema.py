"""The one normalized profile schema that internal apps post.

The msgspec structs here are the single source of truth: validation, the stored
form and the OpenAPI document are all derived from them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final, Literal

import msgspec

Backend = Literal["ocamba", "omneo", "import_batch"]
BACKENDS: tuple[Backend, ...] = ("ocamba", "omneo", "import_batch")

MAX_BATCH = 1000

ShortText = Annotated[str, msgspec.Meta(max_length=256)]
CountryCode = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, upper case")
]
LanguageTag = Annotated[
    str,
    msgspec.Meta(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$", description="BCP 47, e.g. en or en-AU"),
]
# Attribute values: JSON has no date type, so a date travels as an ISO string;
# the mapping file may check it as a date per backend (`gateway.mapping.values.typed`).
AttributeValue = str | int | float | bool


class Consents(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    email: bool | None = None
    sms: bool | None = None


class Address(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    address_line_1: ShortText | None = None
    address_line_2: ShortText | None = None
    address_line_3: ShortText | None = None
    city: ShortText | None = None
    postcode: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    state: ShortText | None = None
    country: CountryCode | None = None
    company: ShortText | None = None
    is_default: bool | None = None


class Profile(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A customer profile as an internal app posts it."""

    external_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1, max_length=200, description="The calling app's stable key for this person"
        ),
    ]
    email: Annotated[str, msgspec.Meta(max_length=254)] | None = None
    phone: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=32,
                description="E.164 (+4930123456); a national number needs country_code",
            ),
        ]
        | None
    ) = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    full_name: ShortText | None = None
    gender: Literal["male", "female", "other", "unknown"] | None = None
    birth_date: dt.date | None = None
    country_code: CountryCode | None = None
    language: LanguageTag | None = None
    company: ShortText | None = None
    title: ShortText | None = None
    occupation: ShortText | None = None
    tags: list[ShortText] | None = None
    identities: dict[ShortText, ShortText] | None = None
    attributes: dict[ShortText, AttributeValue] | None = None
    consents: Consents | None = None
    addresses: list[Address] | None = None


# Normalized fields that hold one value (a string, or a date sent as its ISO form):
# the names a CSV column or a mapping file may give without a prefix.
SCALAR_FIELDS: Final = (
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "full_name",
    "gender",
    "birth_date",
    "country_code",
    "language",
    "company",
    "title",
    "occupation",
)


class NormalizedProfile(Profile, forbid_unknown_fields=True, omit_defaults=True):
    """A profile after validation: email lower-cased, phone in E.164.

    `phone_country` is derived, never accepted from callers: Ocamba derives a
    profile's country from the phone, so the gateway keeps what it parsed.
    """

    phone_country: CountryCode | None = None


# The queue a write waits in: `realtime` (the default) is claimed before
# `bulk` (backfills, `gateway import`), which still gets a bounded share.
Lane = Literal["realtime", "bulk"]
LANES: tuple[Lane, ...] = ("realtime", "bulk")


class ProfileWrite(Profile, forbid_unknown_fields=True, omit_defaults=True):
    """Body of `POST /v1/profiles`: the profile itself, optionally with `targets`,
    its lane (`priority`) and `resend` (send even what the backends already have)."""

    targets: list[Backend] | None = None
    priority: Lane | None = None
    resend: bool = False


class BatchWrite(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /v1/profiles/batch`."""

    profiles: Annotated[list[Profile], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    targets: list[Backend] | None = None
    priority: Lane | None = None
    resend: bool = False


class Accepted(msgspec.Struct):
    """Answer to an accepted write: given only once the write is committed."""

    request_id: str
    profiles: int
    targets: list[Backend]
    # The lane the write waits in: its `priority`, else the app's default
    # (GATEWAY_APP_LANES), else realtime.
    lane: Lane = "realtime"


class FieldError(msgspec.Struct):
    path: str
    message: str


class ErrorBody(msgspec.Struct, omit_defaults=True):
    error: str
    message: str
    errors: list[FieldError] = []
