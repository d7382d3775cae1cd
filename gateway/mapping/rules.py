"""What each backend takes, as the vendor docs in `seeds/` show it.

The checker (`checks`, `sections`) and the resolved defaults (`model`) read
these; nothing here knows of files or of profiles.
"""

from __future__ import annotations

from typing import Final

from gateway.schema import SCALAR_FIELDS

# Fields that hold several values: they can be excluded, never renamed.
COMPOUND_FIELDS: Final = ("tags", "identities", "attributes", "consents", "addresses")
NORMALIZED_FIELDS: Final = SCALAR_FIELDS + COMPOUND_FIELDS
CONSENT_CHANNELS: Final = ("email", "sms")
# `attributes.NAME`, `identities.HANDLE`, `consents.email`: one entry of a compound field.
ENTRY_PREFIXES: Final = ("attributes.", "identities.")

ATTRIBUTE_TYPE_NAMES: Final = ("string", "number", "boolean", "date")
# seeds/000 (Ocamba import) and seeds/002 (Omneo batch) type every property by
# a name; the gateway uses these four, and a file may name no other.
OCAMBA_TYPES: Final = frozenset(ATTRIBUTE_TYPE_NAMES)
OMNEO_TYPES: Final = frozenset(ATTRIBUTE_TYPE_NAMES)

# Fields each backend carries in a place of its own; the rest of the scalar
# fields may be sent as custom properties/attributes through `fields`.
OCAMBA_NATIVE: Final = frozenset({"email", "phone", "full_name"})
OMNEO_NATIVE: Final = frozenset(
    {
        "email",
        "phone",
        "first_name",
        "last_name",
        "gender",
        "birth_date",
        "company",
        "title",
        "occupation",
    }
)

# seeds/003: the `matching` modes and the fields each needs in `data[]`.
IMPORT_BATCH_MATCHING: Final = (
    "email",
    "email_profile",
    "email_sub",
    "phone",
    "phone_sub",
    "profile_id",
    "push_sub",
    "custom",
    "custom_sub",
    "email_phone",
    "email_phone_sub",
)
CUSTOM_MATCHING: Final = frozenset({"custom", "custom_sub"})
PROFILE_ID_MATCHING: Final = frozenset({"profile_id", "email_profile"})
EMAIL_MATCHING: Final = frozenset({"email", "email_sub", "email_profile"})
PHONE_MATCHING: Final = frozenset({"phone", "phone_sub"})
# Fields the gateway sets in an import_batch data item itself.
IMPORT_BATCH_GATEWAY_FIELDS: Final = frozenset({"profile_id", "subscriptions", "phones"})
# Today's names: what import_batch gets without a file.
IMPORT_BATCH_DEFAULT_FIELDS: Final = {
    "first_name": "_fname",
    "last_name": "_lname",
    "email": "email",
    "phone": "phone",
    "external_id": "external_id",
}
DEFAULT_OMNEO_NAMESPACE: Final = "gateway"
