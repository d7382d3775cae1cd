"""The log guard's rules (tests/log_guard.py), applied to spans: no exported
span may carry a raw email address, an E.164-looking phone number, a bearer
credential or a test secret in its name, attributes, events, links or status.

`leaks_in_spans` reads the SDK's `ReadableSpan`s (the in-memory exporter);
`leaks_in_values` any (name, value) pairs, such as those an OTLP receiver
decoded. The `spans` fixture of tests/tracing/conftest.py runs it over every
span a test exported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from tests.log_guard import leaks


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str | bytes):
        yield value if isinstance(value, str) else value.decode(errors="replace")
    elif isinstance(value, Iterable):
        for item in value:
            yield from _texts(item)
    elif value is not None:
        yield str(value)


def leaks_in_values(where: str, values: Iterable[tuple[str, Any]]) -> list[str]:
    return [
        f"{where}: {key}: {leak}"
        for key, value in values
        for text in (key, *_texts(value))
        for leak in leaks(text)
    ]


def _attributes(attrs: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    return list((attrs or {}).items())


def leaks_in_spans(spans: Iterable[ReadableSpan]) -> list[str]:
    found: list[str] = []
    for span in spans:
        where = f"span {span.name!r}"
        values = [("name", span.name), *_attributes(span.attributes)]
        values.append(("status", span.status.description))
        for event in span.events:
            values += [("event", event.name), *_attributes(event.attributes)]
        for link in span.links:
            values += _attributes(link.attributes)
        found += leaks_in_values(where, values)
    return found
