"""Reading `GATEWAY_MAPPING_FILE`: TOML in, a resolved `Mappings` or every problem out.

Precedence: a key the file sets wins over the environment variable of the same
meaning (`GATEWAY_OMNEO_MATCH_CRITERIA`, `GATEWAY_IMPORT_BATCH_MATCHING`); the
variable applies where the file is silent, and always without a file. Both
set and different is logged at start, since one of them is then a mistake (a
variable at its default, `email`, counts as not set).
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable
from typing import Any

from gateway.config import Settings
from gateway.mapping import sections
from gateway.mapping.checks import Checker, Problem
from gateway.mapping.model import Mappings

log = logging.getLogger("gateway.mapping")

SECTIONS = ("ocamba", "omneo", "import_batch")


class MappingError(Exception):
    """The file cannot be used; `lines()` names every problem, one a line."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s)")
        self.source = source
        self.problems = problems

    def lines(self) -> list[str]:
        return [f"{self.source}: {problem}" for problem in self.problems]


def resolve(data: dict[str, Any], settings: Settings, source: str | None = None) -> Mappings:
    """The mapping a parsed file describes (`{}`: no file), or MappingError."""
    c = Checker()
    c.keys(data, "", SECTIONS)
    readers: dict[str, Callable[[], Any]] = {
        "ocamba": lambda: sections.ocamba(c, c.table(data, "ocamba", "")),
        "omneo": lambda: sections.omneo(
            c, c.table(data, "omneo", ""), settings.omneo_match_criteria
        ),
        "import_batch": lambda: sections.import_batch(
            c, c.table(data, "import_batch", ""), settings.import_batch_matching
        ),
    }
    # In the file's order, so the problems are listed as one reads the file.
    order = [name for name in data if name in readers] + [n for n in SECTIONS if n not in data]
    parsed = {name: readers[name]() for name in order}
    mappings = Mappings(**parsed, source=source)
    if c.problems:
        raise MappingError(source or "mapping", c.problems)
    return mappings


def read(path: str, settings: Settings) -> Mappings:
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise MappingError(path, [Problem("(file)", f"cannot be read: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(path, [Problem("(file)", f"not valid TOML: {exc}")]) from None
    mappings = resolve(data, settings, path)
    _warn_overridden(data, settings)
    return mappings


def mappings_for(settings: Settings) -> Mappings:
    """The mapping in force: GATEWAY_MAPPING_FILE's, or the defaults."""
    if settings.mapping_file:
        return read(settings.mapping_file, settings)
    return resolve({}, settings)


def _warn_overridden(data: dict[str, Any], settings: Settings) -> None:
    pairs = (
        ("omneo", "match_criteria", settings.omneo_match_criteria, "GATEWAY_OMNEO_MATCH_CRITERIA"),
        (
            "import_batch",
            "matching",
            settings.import_batch_matching,
            "GATEWAY_IMPORT_BATCH_MATCHING",
        ),
    )
    for section, key, env_value, variable in pairs:
        value = data.get(section, {}).get(key)
        if value is not None and env_value != "email" and value != env_value:
            log.warning(
                "the mapping file's %s.%s (%s) overrides %s (%s)",
                section,
                key,
                value,
                variable,
                env_value,
            )
