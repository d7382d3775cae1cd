"""Omneo's profiles in memory: matching by `match_criteria`, create-or-update,
and the profile context that webhooks carry.

Merge rules (Omneo does not publish them): given scalar fields overwrite,
`null` leaves a field alone; identities merge by handle; custom attributes by
(namespace, handle); tags are a union in first-seen order; other lists replace;
`comms_attributes` and `attributes` merge shallowly. Emails are unique across
profiles (compared case-insensitively): a write that would give a profile an
email another profile has is a processing error, as in Omneo.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from gateway.simulators.omneo_validation import (
    INT_FIELDS,
    OBJECT_FIELDS,
    OBJECT_LIST_FIELDS,
    STRING_FIELDS,
    STRING_LIST_FIELDS,
)

FIRST_ID = 1000
_MERGED_LISTS = ("identities", "custom_attributes", "tags")


class OmneoProfile(msgspec.Struct, kw_only=True):
    id: int
    fields: dict[str, Any]  # every documented field given so far, merged
    created_at: str
    updated_at: str


class MatchError(Exception):
    """The profile cannot be processed; the message says why."""


def _now() -> str:
    # Milliseconds: two updates of one profile within a second must not give
    # byte-identical webhook bodies, which the gateway takes for one event.
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _email_key(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip().lower()
    return None


def match_key(criteria: str, incoming: dict[str, Any]) -> str:
    """The value `incoming` is matched on, or MatchError when it lacks one."""
    if criteria == "email":
        email = _email_key(incoming.get("email"))
        if email is None:
            raise MatchError("profile has no email to match on")
        return email
    for identity in incoming.get("identities") or []:
        if identity.get("handle") == criteria and identity.get("identifier"):
            return str(identity["identifier"])
    raise MatchError(f"profile has no '{criteria}' identity to match on")


def _merge_keyed(old: list[Any], new: list[Any], key: tuple[str, ...]) -> list[Any]:
    merged = {tuple(item.get(k) for k in key): item for item in old}
    for item in new:
        merged[tuple(item.get(k) for k in key)] = item
    return list(merged.values())


def _merge(fields: dict[str, Any], incoming: dict[str, Any]) -> None:
    for key, value in incoming.items():
        if value is None:
            continue
        if key == "identities":
            identities = [{"is_active": True, **identity} for identity in value]
            fields[key] = _merge_keyed(fields.get(key, []), identities, ("handle",))
        elif key == "custom_attributes":
            fields[key] = _merge_keyed(fields.get(key, []), value, ("namespace", "handle"))
        elif key == "tags":
            fields[key] = list(dict.fromkeys([*fields.get(key, []), *value]))
        elif key in OBJECT_FIELDS:
            fields[key] = {**fields.get(key, {}), **value}
        elif key in STRING_FIELDS or key in INT_FIELDS or key in OBJECT_LIST_FIELDS:
            fields[key] = value
        elif key in STRING_LIST_FIELDS:
            fields[key] = list(value)


class OmneoStore:
    """Profiles plus the indexes that matching needs (a benchmark makes many)."""

    def __init__(self) -> None:
        self.profiles: dict[int, OmneoProfile] = {}
        self._next_id = FIRST_ID
        self._by_email: dict[str, int] = {}
        self._by_identity: dict[tuple[str, str], int] = {}

    def find(self, criteria: str, key: str) -> OmneoProfile | None:
        if criteria == "email":
            found = self._by_email.get(key)
        else:
            found = self._by_identity.get((criteria, key))
        return None if found is None else self.profiles[found]

    def find_by_email(self, email: str) -> OmneoProfile | None:
        key = _email_key(email)
        found = None if key is None else self._by_email.get(key)
        return None if found is None else self.profiles[found]

    def upsert(self, criteria: str, incoming: dict[str, Any]) -> tuple[OmneoProfile, bool]:
        """Creates or updates the matching profile; returns it and whether it is new."""
        profile = self.find(criteria, match_key(criteria, incoming))
        email = _email_key(incoming.get("email"))
        owner = None if email is None else self._by_email.get(email)
        if owner is not None and (profile is None or owner != profile.id):
            raise MatchError(f"email is already taken by profile {owner}")
        created = profile is None
        if profile is None:
            now = _now()
            profile = OmneoProfile(id=self._next_id, fields={}, created_at=now, updated_at=now)
            self._next_id += 1
            self.profiles[profile.id] = profile
        else:
            profile.updated_at = _now()
        self._unindex(profile)
        _merge(profile.fields, incoming)
        self._index(profile)
        return profile, created

    def _unindex(self, profile: OmneoProfile) -> None:
        email = _email_key(profile.fields.get("email"))
        if email is not None and self._by_email.get(email) == profile.id:
            del self._by_email[email]
        for identity in profile.fields.get("identities", []):
            key = (identity["handle"], str(identity["identifier"]))
            if self._by_identity.get(key) == profile.id:
                del self._by_identity[key]

    def _index(self, profile: OmneoProfile) -> None:
        email = _email_key(profile.fields.get("email"))
        if email is not None:
            self._by_email[email] = profile.id
        for identity in profile.fields.get("identities", []):
            self._by_identity[(identity["handle"], str(identity["identifier"]))] = profile.id


def context(profile: OmneoProfile) -> dict[str, Any]:
    """The profile as a webhook carries it: the object itself, no envelope."""
    fields = profile.fields
    first, last = fields.get("first_name"), fields.get("last_name")
    body: dict[str, Any] = {
        "id": profile.id,
        "first_name": first,
        "last_name": last,
        "full_name": " ".join(part for part in (first, last) if part) or None,
        "email": fields.get("email"),
    }
    for key in (*STRING_FIELDS, *INT_FIELDS):
        body.setdefault(key, fields.get(key))
    for key in (*_MERGED_LISTS, *STRING_LIST_FIELDS, *OBJECT_LIST_FIELDS):
        body.setdefault(key, fields.get(key, []))
    for key in OBJECT_FIELDS:
        body[key] = fields.get(key, {})
    body["created_at"] = profile.created_at
    body["updated_at"] = profile.updated_at
    return body
