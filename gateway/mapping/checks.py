"""Reading a parsed TOML table while collecting every problem, each with its path.

A checker never stops at the first problem: a user fixing a file wants the
whole list at once. Paths are written as TOML would address the value
(`import_batch.fields."attributes.tier"`, `ocamba.exclude[0]`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from gateway.mapping.rules import (
    CONSENT_CHANNELS,
    ENTRY_PREFIXES,
    NORMALIZED_FIELDS,
)
from gateway.schema import SCALAR_FIELDS

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class Problem(msgspec.Struct, frozen=True):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def join(path: str, key: str) -> str:
    """`path.key`, the key quoted as TOML needs it."""
    part = key if _BARE_KEY.fullmatch(key) else msgspec.json.encode(key).decode()
    return f"{path}.{part}" if path else part


def suggestion(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    for kind, name in names.items():
        if type(value) is kind:
            return name
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a date or time"


class Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def keys(self, table: dict[str, Any], path: str, known: Sequence[str]) -> None:
        for key in table:
            if key not in known:
                self.fail(
                    join(path, key),
                    f"unknown key{suggestion(key, known)}; known: {', '.join(known)}",
                )

    def table(self, parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        value = parent.get(key, {})
        if isinstance(value, dict):
            return value
        self.fail(join(path, key), f"must be a table, not {type_name(value)}")
        return {}

    def _typed(self, parent: dict[str, Any], key: str, path: str, kind: type, noun: str) -> Any:
        value = parent.get(key)
        if value is None:
            return None
        if type(value) is not kind:
            self.fail(join(path, key), f"must be {noun}, not {type_name(value)}")
            return None
        return value

    def string(self, parent: dict[str, Any], key: str, path: str) -> str | None:
        value: str | None = self._typed(parent, key, path, str, "a string")
        if value is not None and not value.strip():
            self.fail(join(path, key), "must not be empty")
            return None
        return value

    def boolean(self, parent: dict[str, Any], key: str, path: str) -> bool | None:
        value: bool | None = self._typed(parent, key, path, bool, "true or false")
        return value

    def integer(self, parent: dict[str, Any], key: str, path: str) -> int | None:
        value: int | None = self._typed(parent, key, path, int, "an integer")
        return value

    def choice(
        self, parent: dict[str, Any], key: str, path: str, choices: Sequence[str]
    ) -> str | None:
        value = self.string(parent, key, path)
        if value is not None and value not in choices:
            self.fail(
                join(path, key),
                f"'{value}' is not one of {', '.join(choices)}{suggestion(value, choices)}",
            )
            return None
        return value

    def strings(self, parent: dict[str, Any], key: str, path: str) -> list[tuple[str, str]]:
        """(item path, item) of an array of strings; bad items are reported."""
        value = parent.get(key, [])
        if not isinstance(value, list):
            self.fail(join(path, key), f"must be an array of strings, not {type_name(value)}")
            return []
        items: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            item_path = f"{join(path, key)}[{index}]"
            if isinstance(item, str) and item.strip():
                items.append((item_path, item))
            else:
                self.fail(item_path, "must be a non-empty string")
        return items

    def string_table(self, parent: dict[str, Any], key: str, path: str) -> dict[str, str]:
        """A table of non-empty strings; bad entries are reported and left out."""
        table = self.table(parent, key, path)
        values: dict[str, str] = {}
        for name, value in table.items():
            if isinstance(value, str) and value.strip():
                values[name] = value
            else:
                self.fail(
                    join(join(path, key), name),
                    f"must be a non-empty string, not {type_name(value)}",
                )
        return values

    def source(self, source: str, path: str, *, scalars: Collection[str], identities: bool) -> bool:
        """Whether `source` names a normalized value this table may send."""
        if source.startswith("attributes.") and len(source) > len("attributes."):
            return True
        if identities and source.startswith("identities.") and len(source) > len("identities."):
            return True
        if source in scalars:
            return True
        if source in SCALAR_FIELDS or source in NORMALIZED_FIELDS:
            self.fail(path, f"'{source}' cannot be mapped here; {_allowed(scalars, identities)}")
            return False
        self.fail(
            path,
            f"unknown normalized field '{source}'{suggestion(source, SCALAR_FIELDS)};"
            f" {_allowed(scalars, identities)}",
        )
        return False

    def exclusions(self, section: dict[str, Any], path: str) -> dict[str, str]:
        """`exclude`: excluded source -> its path in the file."""
        excluded: dict[str, str] = {}
        for item_path, name in self.strings(section, "exclude", path):
            if name in NORMALIZED_FIELDS or _is_entry(name):
                excluded[name] = item_path
            else:
                known = [*NORMALIZED_FIELDS, "consents.email", "consents.sms"]
                self.fail(
                    item_path,
                    f"unknown normalized field '{name}'{suggestion(name, known)};"
                    " name a profile field, attributes.NAME, identities.HANDLE"
                    " or consents.email / consents.sms",
                )
        return excluded


def _is_entry(name: str) -> bool:
    if any(name.startswith(p) and len(name) > len(p) for p in ENTRY_PREFIXES):
        return True
    return name in {f"consents.{channel}" for channel in CONSENT_CHANNELS}


def _allowed(scalars: Collection[str], identities: bool) -> str:
    kinds = "attributes.NAME" + (", identities.HANDLE" if identities else "")
    if not scalars:
        return f"use {kinds}"
    return f"use {kinds} or one of {', '.join(sorted(scalars))}"


def is_excluded(source: str, excluded: Collection[str]) -> bool:
    """Whether an exclusion covers `source` (`attributes` covers `attributes.x`)."""
    return source in excluded or source.partition(".")[0] in excluded
