"""Fails any test during which the gateway logged personal data or a secret.

Every log record of the gateway's loggers ("gateway" and its children) and of
uvicorn's, in every test of the session, is formatted with the gateway's own
JSON formatter (what production writes) and searched for a raw email address,
an E.164-looking phone number, a bearer credential, or a value shaped like the
tokens and secrets the tests configure. Test code's own log lines are not
checked: tests may log their data.

Records are caught where they are made (the record factory), not by a handler,
because uvicorn's logging set-up replaces the handlers of its loggers when a
test starts a server. The "gateway" logger is held at INFO, the production
level, so the INFO lines are made and checked too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.logs import JsonFormatter

WATCHED = ("gateway", "uvicorn")
# Broader than gateway/logs.py's masks on purpose: this is what slips past them.
_NOT_IN_ADDRESS = r"\s\"'<>@\[\](),;:"
LEAKS = {
    "email": re.compile(
        rf"[^{_NOT_IN_ADDRESS}]+@[^{_NOT_IN_ADDRESS}]+\.[^{_NOT_IN_ADDRESS}.]{{2,}}"
    ),
    "phone": re.compile(r"(?<![\w.])\+[1-9](?:[ ()-]?\d){6,14}(?!\d)"),
    "bearer credential": re.compile(r"(?i)bearer\s+[\w.~+/-]{3,}"),
    # The tests' tokens and secrets: crm-token, scrape-secret-1, whsec-test...
    "secret": re.compile(r"\b[a-z0-9]+(?:-[a-z0-9]+)*-(?:token|secret)(?:-\d+)?\b|\bwhsec-[\w-]+"),
}


def leaks(line: str) -> list[str]:
    return [f"{kind}: {m.group(0)!r}" for kind, rx in LEAKS.items() for m in rx.finditer(line)]


@pytest.fixture(autouse=True)
def no_personal_data_or_secrets_in_logs() -> Iterator[None]:
    records: list[logging.LogRecord] = []
    make = logging.getLogRecordFactory()

    def catching(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        # `logging.makeLogRecord` makes a nameless record and names it later.
        if str(record.name).split(".", 1)[0] in WATCHED:
            records.append(record)
        return record

    gateway = logging.getLogger("gateway")
    level = gateway.level
    if gateway.getEffectiveLevel() > logging.INFO:
        gateway.setLevel(logging.INFO)
    logging.setLogRecordFactory(catching)
    try:
        yield
    finally:
        logging.setLogRecordFactory(make)
        gateway.setLevel(level)
    # Formatted only now: `extra` fields are set on a record after it is made.
    formatter = JsonFormatter()
    found = [
        f"{leak} in {line[:300]}"
        for line in (formatter.format(r) for r in list(records))
        for leak in leaks(line)
    ]
    assert found == [], "the gateway logged personal data or a secret:\n" + "\n".join(found)
