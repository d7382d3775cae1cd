"""import_batch's profile database in memory, and how each matching mode finds
(or creates) the profile a data item is about.

Mode -> key, in the order tried (the `_sub` variants also subscribe the profile
in the real product; here they match like their base mode):

| matching                      | key(s) taken from the data item                  |
|-------------------------------|--------------------------------------------------|
| email, email_sub              | `email`                                          |
| phone, phone_sub              | `phone`, else the first of `phones`              |
| profile_id                    | `profile_id` (must exist: it is never created)   |
| email_profile                 | `profile_id` when given (must exist), else email |
| push_sub                      | `subscription_id` of a `channel: "push"` sub     |
| custom, custom_sub            | the item's value of the request's `field_name`   |
| email_phone, email_phone_sub  | `email`, then phone; at least one of them        |

A new profile's id is the first 24 hex digits of SHA-256 over (db_id, key kind,
key value): the same key always gets the same id, even across restarts, like
the 24-character ids the vendor's examples show.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec
import phonenumbers

from gateway.simulators.import_batch_codes import ErrorCode
from gateway.simulators.import_batch_fields import DatabaseFields, ItemError

MATCHING_MODES = (
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
CUSTOM_MODES = ("custom", "custom_sub")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")

Key = tuple[str, str]  # (kind, value)


class StoredProfile(msgspec.Struct, kw_only=True):
    profile_id: str
    db_id: int
    fields: dict[str, Any]  # every field imported so far, merged
    imports: int = 1


def valid_email(value: Any) -> bool:
    return isinstance(value, str) and bool(_EMAIL.match(value))


def valid_phone(value: Any) -> bool:
    if not isinstance(value, str) or not _E164.match(value):
        return False
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(value, None))
    except phonenumbers.NumberParseException:
        return False


def _email(item: dict[str, Any]) -> str | None:
    value = item.get("email")
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _phones(item: dict[str, Any]) -> list[Any]:
    phones = [item["phone"]] if item.get("phone") is not None else []
    listed = item.get("phones")
    return phones + (listed if isinstance(listed, list) else [])


def _push_id(item: dict[str, Any]) -> str | None:
    for sub in item.get("subscriptions") or []:
        if isinstance(sub, dict) and sub.get("channel") == "push" and sub.get("subscription_id"):
            return str(sub["subscription_id"])
    return None


class ImportBatchStore:
    def __init__(self, db_id: int, fields: DatabaseFields | None = None) -> None:
        self.db_id = db_id
        self.fields = fields or DatabaseFields()
        self.profiles: dict[str, StoredProfile] = {}
        self._index: dict[Key, str] = {}

    def import_item(
        self, item: Any, matching: str, field_name: str | None
    ) -> tuple[StoredProfile, bool]:
        """Creates or updates the item's profile; returns it and whether it is new.
        Raises ItemError."""
        if not isinstance(item, dict):
            raise ItemError(ErrorCode.INVALID_PROFILE, "Profile data must be an object")
        if matching in CUSTOM_MODES and field_name:
            self.fields.check_field_name(field_name)
        self.fields.check_item(item)
        if item.get("email") is not None and not valid_email(item["email"]):
            raise ItemError(ErrorCode.INVALID_EMAIL, "Invalid email")
        if any(not valid_phone(p) for p in _phones(item)):
            raise ItemError(ErrorCode.INVALID_PHONE, "Invalid phone: E.164 expected")
        keys, by_id = self._keys(item, matching, field_name)
        if by_id is not None:
            found = self.profiles.get(by_id)
            if found is None:
                raise ItemError(ErrorCode.PROFILE_NOT_FOUND, "Profile not found")
            return self._update(found, item, field_name), False
        if not keys:
            raise ItemError(ErrorCode.MATCHING_FIELD_MISSING, self._missing(matching, field_name))
        for key in keys:
            existing = self._index.get(key)
            if existing is not None:
                return self._update(self.profiles[existing], item, field_name), False
        profile = StoredProfile(
            profile_id=self._new_id(keys[0]), db_id=self.db_id, fields=dict(item)
        )
        self.profiles[profile.profile_id] = profile
        self._index_profile(profile, field_name)
        return profile, True

    def _keys(
        self, item: dict[str, Any], matching: str, field_name: str | None
    ) -> tuple[list[Key], str | None]:
        """The keys to try, or the profile id to update when matching by id."""
        base = matching.removesuffix("_sub")
        if base in ("profile_id", "email_profile"):
            profile_id = item.get("profile_id")
            if isinstance(profile_id, str) and profile_id:
                return [], profile_id
            if base == "profile_id":
                return [], None
            base = "email"
        email = _email(item)
        phones = [str(p) for p in _phones(item)]
        keys: list[Key] = []
        if base in ("email", "email_phone") and email:
            keys.append(("email", email))
        if base in ("phone", "email_phone") and phones:
            keys.append(("phone", phones[0]))
        if base == "push":
            push = _push_id(item)
            if push:
                keys.append(("push", push))
        if base == "custom" and field_name:
            value = item.get(field_name)
            usable = isinstance(value, str | int | float) and not isinstance(value, bool)
            if usable and str(value):
                keys.append((f"custom:{field_name}", str(value)))
        return keys, None

    @staticmethod
    def _missing(matching: str, field_name: str | None) -> str:
        base = matching.removesuffix("_sub")
        needs = {
            "email": "email",
            "phone": "phone",
            "profile_id": "profile_id",
            "email_profile": "email or profile_id",
            "push": "a push subscription with subscription_id",
            "custom": field_name or "field_name",
            "email_phone": "email or phone",
        }
        return f"Missing matching field: {needs.get(base, base)}"

    def _new_id(self, key: Key) -> str:
        seed = f"{self.db_id}|{key[0]}|{key[1]}".encode()
        return hashlib.sha256(seed).hexdigest()[:24]

    def _update(
        self, profile: StoredProfile, item: dict[str, Any], field_name: str | None
    ) -> StoredProfile:
        profile.fields.update(item)
        profile.imports += 1
        self._index_profile(profile, field_name)
        return profile

    def _index_profile(self, profile: StoredProfile, field_name: str | None) -> None:
        # setdefault: a key that already names another profile keeps naming it.
        fields = profile.fields
        email = _email(fields)
        if email:
            self._index.setdefault(("email", email), profile.profile_id)
        for phone in _phones(fields):
            self._index.setdefault(("phone", str(phone)), profile.profile_id)
        push = _push_id(fields)
        if push:
            self._index.setdefault(("push", push), profile.profile_id)
        if field_name and fields.get(field_name) is not None:
            key = (f"custom:{field_name}", str(fields[field_name]))
            self._index.setdefault(key, profile.profile_id)

    def find(self, kind: str, value: str) -> StoredProfile | None:
        """Looks a profile up by a key, e.g. ("email", "a@b.c"), ("custom:CRM_ID", "7")."""
        found = self._index.get((kind, value.lower() if kind == "email" else value))
        return None if found is None else self.profiles[found]
