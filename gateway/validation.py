"""Turns a decoded JSON body into normalized profiles, or into every error at once.

msgspec stops at the first error, but callers fixing a batch of 1000 profiles
need all of them, each with its path (`profiles[3].email`). So the fast path
converts a whole profile in one call, and only a profile that fails is walked
field by field to collect each error; the struct types stay the one source of
truth for what a field accepts.
"""

from __future__ import annotations

import re
import typing
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from gateway import phone as phone_numbers
from gateway.schema import (
    BACKENDS,
    LANES,
    MAX_BATCH,
    Backend,
    FieldError,
    Lane,
    NormalizedProfile,
    Profile,
)

# Ocamba stores at most 100 custom properties per profile (seeds/000).
OCAMBA_MAX_PROPERTIES = 100

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")
_MSGSPEC_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELDS = {f.encode_name: f for f in msgspec.structs.fields(Profile)}
_REQUIRED = [f.encode_name for f in msgspec.structs.fields(Profile) if f.required]


# I-JSON (RFC 7493): integers beyond 2**53 lose digits in every JavaScript and
# double-based JSON reader a backend may use; send such ids as strings.
MAX_SAFE_INT = 2**53 - 1
# Control, format (zero-width, bidi overrides such as U+202E) and line or
# paragraph separators: invisible or reordering in an id that people read and
# match on, and the usual way to make two ids look alike.
_UNSAFE_ID_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


class InvalidInput(Exception):
    """The body is well-formed JSON but breaks the schema; carries every error."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


def _join(prefix: str, suffix: str) -> str:
    if not prefix:
        return suffix.lstrip(".")
    if not suffix:
        return prefix
    return prefix + suffix if suffix.startswith("[") else f"{prefix}.{suffix.lstrip('.')}"


def _from_msgspec(exc: msgspec.ValidationError, prefix: str) -> FieldError:
    m = _MSGSPEC_PATH.match(str(exc))
    assert m is not None  # the pattern matches any string
    return FieldError(path=_join(prefix, m.group("path") or ""), message=m.group("msg"))


def field_error(exc: msgspec.ValidationError) -> FieldError:
    """A typed decode's error with its path in the form this module uses."""
    error = _from_msgspec(exc, "")
    return error if error.path else FieldError("$", error.message)


def _is_dict_type(tp: Any) -> bool:
    return any(typing.get_origin(arg) is dict for arg in typing.get_args(tp))


def _dict_value_type(tp: Any) -> Any:
    for arg in typing.get_args(tp):
        if typing.get_origin(arg) is dict:
            return typing.get_args(arg)[1]
    raise TypeError(tp)


def _field_errors(raw: dict[str, Any], prefix: str) -> list[FieldError]:
    """Every type error in one raw profile, one per offending field or entry."""
    errors: list[FieldError] = []
    for name in _REQUIRED:
        if name not in raw:
            errors.append(FieldError(_join(prefix, name), "required field is missing"))
    for name, value in raw.items():
        path = _join(prefix, name)
        field = _FIELDS.get(name)
        if field is None:
            errors.append(FieldError(path, "unknown field"))
            continue
        if _is_dict_type(field.type) and isinstance(value, dict):
            # msgspec reports a bad dict entry as `$[...]`; name the key instead.
            value_type = _dict_value_type(field.type)
            for key, item in value.items():
                try:
                    msgspec.convert(key, str)
                    msgspec.convert(item, value_type)
                except msgspec.ValidationError as exc:
                    errors.append(_from_msgspec(exc, f"{path}.{key}"))
            continue
        try:
            msgspec.convert(value, field.type)
        except msgspec.ValidationError as exc:
            errors.append(_from_msgspec(exc, path))
    return errors


def _id_is_safe(external_id: str) -> bool:
    # `isprintable` is the fast path; it also refuses characters that are fine
    # here (no-break spaces, code points newer than this Python's Unicode).
    return external_id.isprintable() or not any(
        unicodedata.category(c) in _UNSAFE_ID_CATEGORIES for c in external_id
    )


def _normalize(profile: Profile, prefix: str) -> tuple[NormalizedProfile | None, list[FieldError]]:
    errors: list[FieldError] = []
    fields = msgspec.structs.asdict(profile)
    if not _id_is_safe(profile.external_id):
        errors.append(
            FieldError(
                _join(prefix, "external_id"),
                "must not contain control, zero-width, bidi or line separator characters",
            )
        )
    for name, value in (profile.attributes or {}).items():
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INT:
            errors.append(
                FieldError(
                    _join(prefix, f"attributes.{name}"),
                    f"integer beyond ±{MAX_SAFE_INT}; send it as a string",
                )
            )
    if profile.email is not None:
        # NFC, so one address typed with a precomposed or a combining accent is one
        # address, as backends that match people by email need.
        email = unicodedata.normalize("NFC", profile.email.strip().lower())
        if not _EMAIL.match(email):
            errors.append(FieldError(_join(prefix, "email"), "not a valid email address"))
        fields["email"] = email
    if profile.phone is not None:
        phone = phone_numbers.normalize(profile.phone, profile.country_code)
        if phone is None:
            hint = (
                ""
                if profile.phone.startswith("+") or profile.country_code
                else (" (a number without +country needs country_code)")
            )
            errors.append(FieldError(_join(prefix, "phone"), f"not a valid phone number{hint}"))
        else:
            fields["phone"], fields["phone_country"] = phone
    if errors:
        return None, errors
    return NormalizedProfile(**fields), []


def normalize_profile(
    raw: Any, prefix: str = ""
) -> tuple[NormalizedProfile | None, list[FieldError]]:
    """Validate one decoded profile; returns it normalized, or its errors."""
    if not isinstance(raw, dict):
        return None, [FieldError(prefix or "$", "expected a profile object")]
    try:
        profile = msgspec.convert(raw, Profile)
    except msgspec.ValidationError:
        return None, _field_errors(raw, prefix) or [FieldError(prefix or "$", "invalid profile")]
    return _normalize(profile, prefix)


def reject_nul(data: Any) -> None:
    """Raises `InvalidInput` naming every string or key that holds U+0000: no
    person's data has one, and text columns and many backends cannot hold it.
    Iterative, so a deeply nested body cannot exhaust the stack."""
    errors: list[FieldError] = []
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                errors.append(FieldError(path or "$", "must not contain the NUL character"))
        elif isinstance(value, dict):
            children: list[tuple[str, Any]] = []
            for key, item in value.items():
                child = _join(path, key.replace("\x00", "\\u0000"))
                if "\x00" in key:
                    errors.append(FieldError(child, "name must not contain the NUL character"))
                children.append((child, item))
            stack.extend(reversed(children))  # popped in document order
        elif isinstance(value, list):
            stack.extend(reversed([(f"{path}[{i}]", item) for i, item in enumerate(value)]))
    if errors:
        raise InvalidInput(errors)


def validate_targets(
    raw: Any, configured: Sequence[Backend], path: str = "targets"
) -> tuple[list[Backend], list[FieldError]]:
    """`targets` defaults to every configured backend; naming another is an error."""
    if raw is None:
        return list(configured), []
    if not isinstance(raw, list) or not raw:
        return [], [FieldError(path, "expected a non-empty list of backend names")]
    errors: list[FieldError] = []
    targets: list[Backend] = []
    for i, name in enumerate(raw):
        if name not in BACKENDS:
            errors.append(
                FieldError(f"{path}[{i}]", f"unknown target {name!r}; known: {', '.join(BACKENDS)}")
            )
        elif name not in configured:
            errors.append(FieldError(f"{path}[{i}]", f"target {name!r} is not configured"))
        elif name not in targets:
            targets.append(name)
    return targets, errors


def _target_rules(
    profiles: Iterable[tuple[str, NormalizedProfile]], targets: Sequence[Backend]
) -> list[FieldError]:
    errors: list[FieldError] = []
    if "ocamba" in targets:
        for prefix, p in profiles:
            if p.attributes and len(p.attributes) > OCAMBA_MAX_PROPERTIES:
                errors.append(
                    FieldError(
                        _join(prefix, "attributes"),
                        f"Ocamba accepts at most {OCAMBA_MAX_PROPERTIES} custom properties",
                    )
                )
    return errors


class ParsedWrite(NamedTuple):
    """A write body, validated: what `POST /v1/profiles` and `/batch` store."""

    profiles: list[NormalizedProfile]
    targets: list[Backend]
    priority: Lane | None = None  # None: the app's default lane
    resend: bool = False


def _write_options(body: dict[str, Any]) -> tuple[Lane | None, bool, list[FieldError]]:
    """`priority` and `resend` of a write body (absent: None and False)."""
    errors: list[FieldError] = []
    priority = body.get("priority")
    if priority is not None and priority not in LANES:
        errors.append(FieldError("priority", f"expected one of {', '.join(LANES)} or null"))
        priority = None
    resend = body.get("resend", False)
    if not isinstance(resend, bool):
        errors.append(FieldError("resend", "expected true or false"))
        resend = False
    return priority, resend, errors


def parse_single(body: Any, configured: Sequence[Backend]) -> ParsedWrite:
    """The body of `POST /v1/profiles`: a profile with optional `targets`,
    `priority` and `resend` keys."""
    if not isinstance(body, dict):
        raise InvalidInput([FieldError("$", "expected a JSON object")])
    raw = dict(body)
    targets, errors = validate_targets(raw.pop("targets", None), configured)
    priority, resend, option_errors = _write_options(raw)
    errors += option_errors
    raw.pop("priority", None)
    raw.pop("resend", None)
    profile, profile_errors = normalize_profile(raw)
    errors += profile_errors
    if profile is not None:
        errors += _target_rules([("", profile)], targets)
    if errors:
        raise InvalidInput(errors)
    assert profile is not None
    return ParsedWrite([profile], targets, priority, resend)


_BATCH_KEYS = ("profiles", "targets", "priority", "resend")


def parse_batch(body: Any, configured: Sequence[Backend]) -> ParsedWrite:
    """The body of `POST /v1/profiles/batch`:
    `{"profiles": [...], "targets": [...], "priority": ..., "resend": ...}`."""
    if not isinstance(body, dict):
        raise InvalidInput([FieldError("$", "expected a JSON object")])
    errors = [FieldError(k, "unknown field") for k in body if k not in _BATCH_KEYS]
    targets, target_errors = validate_targets(body.get("targets"), configured)
    errors += target_errors
    priority, resend, option_errors = _write_options(body)
    errors += option_errors
    raw_profiles = body.get("profiles")
    if not isinstance(raw_profiles, list):
        errors.append(FieldError("profiles", "required: a list of 1 to 1000 profiles"))
        raise InvalidInput(errors)
    if not 1 <= len(raw_profiles) <= MAX_BATCH:
        errors.append(
            FieldError("profiles", f"expected 1 to {MAX_BATCH} profiles, got {len(raw_profiles)}")
        )
        raise InvalidInput(errors)
    profiles: list[NormalizedProfile] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_profiles):
        prefix = f"profiles[{i}]"
        profile, profile_errors = normalize_profile(raw, prefix)
        errors += profile_errors
        if profile is None:
            continue
        errors += _target_rules([(prefix, profile)], targets)
        first = seen.setdefault(profile.external_id, i)
        if first != i:
            # Two writes of one person in one batch have no order a caller could rely on.
            errors.append(
                FieldError(
                    f"{prefix}.external_id",
                    f"duplicate of profiles[{first}].external_id within one batch",
                )
            )
        profiles.append(profile)
    if errors:
        raise InvalidInput(errors)
    return ParsedWrite(profiles, targets, priority, resend)
