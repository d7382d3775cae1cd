"""Request validation for Omneo's `POST /v3/profiles/batch`, Laravel style.

Omneo's doc (`seeds/002_*`, `seeds/004_*`) gives the body schema but no error
shape. Omneo runs on Laravel, so a malformed body gets what Laravel's validator
answers: 422 `{"message": "The given data was invalid.", "errors": {path:
[messages]}}`, paths dotted (`profiles.3.email`), messages in Laravel's wording.
Field types are checked loosely: a type per documented field, `null` accepted as
"not given", unknown fields ignored, enums (gender, profile_type) not enforced,
except `custom_attributes[].type`: only `string` is taken (see ATTRIBUTE_TYPES),
with a string `value`, because a client guessing other types is what this
simulator exists to catch.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

MAX_PROFILES = 500
INVALID_MESSAGE = "The given data was invalid."

STRING_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "title",
    "gender",
    "currency",
    "profile_type",
    "joined_at",
    "mobile_phone",
    "secondary_phone",
    "company",
    "occupation",
    "avatar_url",
    "joined_location_external_id",
    "joined_location_external_code",
    "preferred_location_external_id",
    "preferred_location_external_code",
    "region",
    "region_country",
    "region_state",
)
INT_FIELDS = (
    "birth_day",
    "birth_month",
    "birth_year",
    "joined_location_id",
    "preferred_location_id",
    "region_id",
)
STRING_LIST_FIELDS = ("tags", "statuses")
OBJECT_LIST_FIELDS = (
    "identities",
    "custom_attributes",
    "dates_attributes",
    "addresses",
    "regions",
    "organisations",
)
OBJECT_FIELDS = ("comms_attributes", "attributes")
PROFILE_FIELDS = (
    *STRING_FIELDS,
    *INT_FIELDS,
    *STRING_LIST_FIELDS,
    *OBJECT_LIST_FIELDS,
    *OBJECT_FIELDS,
)

# The doc's schema shows `"type": "string"` where every free string is
# "<string>": a literal is an enum's first value (as `"gender": "male"`), and no
# other value is documented. Dates have their own documented place,
# `dates_attributes[].date` ("2023-12-25"), checked as Laravel's `date_format:Y-m-d`.
ATTRIBUTE_TYPES = ("string",)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# Laravel's `email` rule (RFC validation) wants one @ with something either side.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")

Errors = dict[str, list[str]]


def _display(path: str) -> str:
    return path.replace("_", " ")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Validator:
    def __init__(self) -> None:
        self.errors: Errors = {}

    def fail(self, path: str, message: str) -> None:
        self.errors.setdefault(path, []).append(message.format(attr=_display(path)))

    def required_string(self, item: dict[str, Any], key: str, path: str) -> None:
        value = item.get(key)
        if value is None or value == "":
            self.fail(path, "The {attr} field is required.")
        elif not isinstance(value, str):
            self.fail(path, "The {attr} field must be a string.")

    def typed(self, value: Any, path: str, check: Callable[[Any], bool], noun: str) -> bool:
        if value is None or check(value):
            return True
        self.fail(path, "The {attr} field must be " + noun + ".")
        return False


def validate_batch(body: Any) -> Errors:
    """Every error in the body, keyed by dotted path; empty when it is valid."""
    v = _Validator()
    if not isinstance(body, dict):
        # Laravel reads a non-object JSON body as no input at all.
        body = {}
    v.required_string(body, "match_criteria", "match_criteria")
    v.typed(body.get("import_job_id"), "import_job_id", lambda x: isinstance(x, str), "a string")
    profiles = body.get("profiles")
    if profiles is None or profiles == []:
        v.fail("profiles", "The {attr} field is required.")
    elif not isinstance(profiles, list):
        v.fail("profiles", "The {attr} field must be an array.")
    elif len(profiles) > MAX_PROFILES:
        v.fail("profiles", f"The {{attr}} field must not have more than {MAX_PROFILES} items.")
    else:
        for i, profile in enumerate(profiles):
            _validate_profile(v, profile, f"profiles.{i}")
    return v.errors


def _validate_profile(v: _Validator, profile: Any, path: str) -> None:
    if not isinstance(profile, dict):
        v.fail(path, "The {attr} field must be an array.")
        return
    for key in STRING_FIELDS:
        v.typed(profile.get(key), f"{path}.{key}", lambda x: isinstance(x, str), "a string")
    email = profile.get("email")
    if isinstance(email, str) and not _EMAIL.match(email):
        v.fail(f"{path}.email", "The {attr} field must be a valid email address.")
    for key in INT_FIELDS:
        v.typed(profile.get(key), f"{path}.{key}", _is_int, "an integer")
    for key in OBJECT_FIELDS:
        v.typed(profile.get(key), f"{path}.{key}", lambda x: isinstance(x, dict), "an array")
    for key in STRING_LIST_FIELDS:
        values = profile.get(key)
        if v.typed(values, f"{path}.{key}", lambda x: isinstance(x, list), "an array"):
            for j, value in enumerate(values or []):
                v.typed(value, f"{path}.{key}.{j}", lambda x: isinstance(x, str), "a string")
    for key in OBJECT_LIST_FIELDS:
        items = profile.get(key)
        if not v.typed(items, f"{path}.{key}", lambda x: isinstance(x, list), "an array"):
            continue
        for j, item in enumerate(items or []):
            item_path = f"{path}.{key}.{j}"
            if not v.typed(item, item_path, lambda x: isinstance(x, dict), "an array"):
                continue
            if key == "identities":
                v.required_string(item, "handle", f"{item_path}.handle")
                v.required_string(item, "identifier", f"{item_path}.identifier")
                v.typed(
                    item.get("is_active"),
                    f"{item_path}.is_active",
                    lambda x: isinstance(x, bool),
                    "true or false",
                )
            elif key == "custom_attributes":
                _validate_custom_attribute(v, item, item_path)
            elif key == "dates_attributes":
                _validate_date_attribute(v, item, item_path)


def _validate_custom_attribute(v: _Validator, item: dict[str, Any], path: str) -> None:
    v.required_string(item, "namespace", f"{path}.namespace")
    v.required_string(item, "handle", f"{path}.handle")
    kind = item.get("type")
    string = v.typed(kind, f"{path}.type", lambda x: isinstance(x, str), "a string")
    if string and kind is not None and kind not in ATTRIBUTE_TYPES:
        v.fail(f"{path}.type", "The selected {attr} is invalid.")
    value = item.get("value")
    if value is None:
        v.fail(f"{path}.value", "The {attr} field is required.")
    else:
        v.typed(value, f"{path}.value", lambda x: isinstance(x, str), "a string")


def _validate_date_attribute(v: _Validator, item: dict[str, Any], path: str) -> None:
    date = item.get("date")
    string = v.typed(date, f"{path}.date", lambda x: isinstance(x, str), "a string")
    if string and date is not None and not _valid_date(date):
        v.fail(f"{path}.date", "The {attr} field must match the format Y-m-d.")


def _valid_date(text: str) -> bool:
    if not _DATE.match(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True
