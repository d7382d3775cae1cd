"""The fields an import_batch database has, and the per-profile checks a real
database makes against them.

A real import_batch database is created with its own custom fields (the
vendor's example matches on `Custom_ID`); a data item that names a field the
database lacks, or a `field_name` that is not one of its custom fields, is
refused for that profile, not for the whole request (seeds/003 answers one
result per profile). A simulator that took any field would agree with every
client's guess, so it only takes the fields it was started with.

- System fields start with `_`. Seeds/003 shows `_fname` and `_lname` in data
  and names `_regip` and `_ip` (read by `detect_geo`); `_bdate`, the birth
  date, is the system field issue 14 maps `birth_date` to. The doc's list is
  not exhaustive, so more can be given like custom fields.
- Keys that are part of the request rather than database fields: `email`,
  `phone`, `profile_id` (matching by id) and `subscriptions` (seeds/003), and
  `phones`, which the simulator's phone matching also reads.
- Custom fields by default are those the gateway's default mapping and
  `gateway demo` send: `external_id` (the gateway's `field_name` for custom
  matching, on every item), and the attributes of the demo's banner and the
  README's example profile, `tier` and `since`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from gateway.simulators.import_batch_codes import ErrorCode

SYSTEM_FIELDS: Final = frozenset({"_fname", "_lname", "_bdate", "_regip", "_ip"})
REQUEST_KEYS: Final = frozenset({"email", "phone", "phones", "profile_id", "subscriptions"})
DEFAULT_CUSTOM_FIELDS: Final = ("external_id", "tier", "since")


class ItemError(Exception):
    """A data item that cannot be imported; `code` is its per-profile error."""

    def __init__(self, code: ErrorCode, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class DatabaseFields:
    """One database's fields: the system ones plus `custom`."""

    def __init__(self, custom: Iterable[str] = DEFAULT_CUSTOM_FIELDS) -> None:
        self.custom = frozenset(custom)
        self.known = SYSTEM_FIELDS | self.custom

    def check_field_name(self, field_name: str) -> None:
        """Raises ItemError unless `field_name` is one of the custom fields."""
        if field_name not in self.custom:
            raise ItemError(
                ErrorCode.UNKNOWN_MATCHING_FIELD,
                f"field_name '{field_name}' is not a custom field of this database",
            )

    def check_item(self, item: dict[str, Any]) -> None:
        """Raises ItemError for the first field of `item` the database lacks.
        Names only: a field's value may be personal data."""
        for name in item:
            if name not in REQUEST_KEYS and name not in self.known:
                kind = "system field" if name.startswith("_") else "field"
                raise ItemError(ErrorCode.UNKNOWN_FIELD, f"Unknown {kind}: {name}")
