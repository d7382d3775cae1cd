"""Validation of Ocamba Hood's request bodies (`seeds/001_*` create,
`seeds/000_*` import); a `BadRequest` is the documented 400.

Custom property types: every example in seeds/000 (curl, JavaScript, PHP) has
`"type": "string"` with a string value, a number-like "1234567890" included,
and the doc names no other type. So `string` is the only type taken, and its
value must be a JSON string: a client that invents "number", "boolean" or
"date" finds out here, not from a real account.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

MAX_CUSTOM_PROPERTIES = 100
PROPERTY_TYPES = ("string",)


class BadRequest(Exception):
    pass


def _optional_string(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string.")
    return value.strip() or None


def parse_create(body: Any) -> tuple[str | None, str | None, str]:
    """Returns (email, mobile_phone_number, full_name) or raises BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("The request is not valid.")
    email = _optional_string(body, "email")
    phone = _optional_string(body, "mobile_phone_number")
    full_name = _optional_string(body, "full_name") or ""
    if email is None and phone is None:
        raise BadRequest("Either 'email' or 'mobile_phone_number' is required.")
    if email is not None and "@" not in email:
        raise BadRequest("'email' is not a valid email address.")
    return email, phone, full_name


def parse_import(body: Any, known: Container[str]) -> list[tuple[str, dict[str, Any]]]:
    """Returns [(id, custom_properties)] or raises BadRequest naming the culprit."""
    if not isinstance(body, dict) or not isinstance(body.get("profiles"), list):
        raise BadRequest("'profiles' must be an array.")
    profiles: list[Any] = body["profiles"]
    if not profiles:
        raise BadRequest("'profiles' must not be empty.")
    seen: set[str] = set()
    parsed: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(profiles):
        where = f"profiles[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object.")
        profile_id = item.get("id")
        if not isinstance(profile_id, str) or not profile_id:
            raise BadRequest(f"{where}.id must be a non-empty string.")
        if profile_id in seen:
            raise BadRequest(f"{where}.id '{profile_id}' appears more than once.")
        seen.add(profile_id)
        if profile_id not in known:
            raise BadRequest(f"{where}.id '{profile_id}' does not exist.")
        properties = item.get("custom_properties")
        if not isinstance(properties, dict):
            raise BadRequest(f"{where}.custom_properties must be an object.")
        if len(properties) > MAX_CUSTOM_PROPERTIES:
            raise BadRequest(
                f"{where}.custom_properties has {len(properties)} properties; "
                f"at most {MAX_CUSTOM_PROPERTIES} are allowed."
            )
        for name, prop in properties.items():
            if not isinstance(prop, dict):
                raise BadRequest(f"{where}.custom_properties.{name} must be an object.")
            _check_property(prop, f"{where}.custom_properties.{name}")
        parsed.append((profile_id, properties))
    return parsed


def _check_property(prop: dict[str, Any], where: str) -> None:
    kind = prop.get("type")
    if not isinstance(kind, str) or not kind:
        raise BadRequest(f"{where}.type must be a string.")
    if kind not in PROPERTY_TYPES:
        allowed = ", ".join(f"'{t}'" for t in PROPERTY_TYPES)
        raise BadRequest(f"{where}.type '{kind}' is not supported; use {allowed}.")
    if "value" not in prop:
        raise BadRequest(f"{where}.value is required.")
    if not isinstance(prop["value"], str):
        raise BadRequest(f"{where}.value must be a string, as its type says.")
