"""The documented mapping from CSV columns to the profile schema.

A CSV cell is always text, so the header says where each column goes and, for
custom attributes, which JSON type it becomes. An empty cell means the field is
absent, never an empty string: spreadsheets cannot tell the two apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from gateway.schema import SCALAR_FIELDS, Address, FieldError

ADDRESS_FIELDS = tuple(f.encode_name for f in msgspec.structs.fields(Address))
CONSENT_FIELDS = ("email", "sms")
TAG_SEPARATOR = ";"

Kind = Literal["text", "tags", "attribute", "identity", "consent", "address"]
ValueType = Literal["string", "number", "bool"]

_TYPES: dict[str, ValueType] = {"string": "string", "number": "number", "bool": "bool"}
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})
_INT = re.compile(r"^[+-]?\d+$")

MAPPING_HELP = f"""\
CSV columns (header row required; an empty cell means "absent"):
  {", ".join(SCALAR_FIELDS[:7])},
  {", ".join(SCALAR_FIELDS[7:])}
                              the profile field of that name
  tags                        tags separated by "{TAG_SEPARATOR}"
  attributes.NAME             a custom attribute, as a string
  attributes.NAME:number      ... as a number; attributes.NAME:bool as true/false
  identities.HANDLE           an identity, e.g. identities.shopify_id
  consents.email, consents.sms  true/false (also yes/no, 1/0)
  address.FIELD               one address; FIELD is one of
                              {", ".join(ADDRESS_FIELDS[:5])},
                              {", ".join(ADDRESS_FIELDS[5:])} (true/false)"""


class MappingError(ValueError):
    """The header names a column the mapping does not know; nothing is imported."""


@dataclass(frozen=True, slots=True)
class Column:
    kind: Kind
    name: str  # the profile field, attribute name, identity handle, consent or address field
    type: ValueType = "string"


def parse_header(header: Sequence[str]) -> list[Column | None]:
    """One `Column` per header cell (`None` for an unnamed, empty column)."""
    columns: list[Column | None] = []
    problems: list[str] = []
    seen: set[Column] = set()
    for cell in header:
        title = cell.strip()
        column = _column(title) if title else None
        if title and column is None:
            problems.append(f"unknown column {title!r}")
        if column is not None:
            key = Column(column.kind, column.name)  # `a:number` and `a` are one attribute
            if key in seen:
                problems.append(f"column {title!r} appears twice")
            seen.add(key)
        columns.append(column)
    if problems:
        raise MappingError("; ".join(problems))
    if Column("text", "external_id") not in seen:
        raise MappingError("the header has no external_id column")
    return columns


def _column(title: str) -> Column | None:
    if title in SCALAR_FIELDS:
        return Column("text", title)
    if title == "tags":
        return Column("tags", title)
    prefix, _, rest = title.partition(".")
    if not rest:
        return None
    if prefix == "attributes":
        name, _, type_name = rest.rpartition(":") if ":" in rest else (rest, "", "string")
        type_ = _TYPES.get(type_name)
        return Column("attribute", name, type_) if name and type_ else None
    if prefix == "identities":
        return Column("identity", rest)
    if prefix == "consents" and rest in CONSENT_FIELDS:
        return Column("consent", rest, "bool")
    if prefix == "address" and rest in ADDRESS_FIELDS:
        return Column("address", rest, "bool" if rest == "is_default" else "string")
    return None


def _bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def _number(text: str) -> int | float | None:
    stripped = text.strip()
    if _INT.match(stripped):
        return int(stripped)
    try:
        value = float(stripped)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _typed(text: str, type_: ValueType, path: str) -> tuple[Any, FieldError | None]:
    if type_ == "bool":
        flag = _bool(text)
        if flag is None:
            return None, FieldError(path, f"expected true or false, got {text!r}")
        return flag, None
    if type_ == "number":
        number = _number(text)
        if number is None:
            return None, FieldError(path, f"expected a number, got {text!r}")
        return number, None
    return text, None


def row_to_profile(
    columns: Sequence[Column | None], cells: Sequence[str]
) -> tuple[dict[str, Any], list[FieldError]]:
    """The profile a CSV row stands for, and the cells that could not be converted."""
    profile: dict[str, Any] = {}
    errors: list[FieldError] = []
    if len(cells) > len(columns):
        errors.append(
            FieldError("$", f"{len(cells)} cells but the header has {len(columns)} columns")
        )
    for column, cell in zip(columns, cells, strict=False):
        if column is None or cell == "":
            continue
        if column.kind == "text":
            profile[column.name] = cell
        elif column.kind == "tags":
            tags = [t.strip() for t in cell.split(TAG_SEPARATOR)]
            profile["tags"] = [t for t in tags if t]
        else:
            group = {
                "attribute": "attributes",
                "identity": "identities",
                "consent": "consents",
                "address": "addresses",
            }[column.kind]
            path = f"{group}[0].{column.name}" if group == "addresses" else f"{group}.{column.name}"
            value, error = _typed(cell, column.type, path)
            if error is not None:
                errors.append(error)
                continue
            if group == "addresses":
                profile.setdefault("addresses", [{}])[0][column.name] = value
            else:
                profile.setdefault(group, {})[column.name] = value
    return profile, errors
