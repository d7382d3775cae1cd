"""Structured logs: one JSON object per line, with personal data masked.

Code logs external ids and counts, never profiles; the redaction here is the
safety net for a message that slips an email or phone number in anyway.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# Seven or more digits with optional separators, not inside a word or an IP
# address: phone numbers in any format.
_PHONE = re.compile(r"(?<![\w.])\+?\d[\d ()-]{5,}\d(?![\w.])")
# In an id field only a number written as a phone number, `+` first, is masked:
# an Ocamba id is all digits and must stay readable.
_E164 = re.compile(r"(?<![\w.])\+\d[\d ()-]{5,}\d(?![\w.])")
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+")
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


def redact(text: str) -> str:
    text = _CREDENTIAL.sub(r"\1 [secret]", text)
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))


def redact_id(text: str) -> str:
    # An app may use a person's email (or phone) as its external_id.
    return _E164.sub("[phone]", _EMAIL.sub("[email]", text))


def _mask(key: str, value: Any) -> Any:
    if isinstance(value, str):
        return redact_id(value) if key.endswith("id") else redact(value)
    if isinstance(value, dict):
        return {str(k): _mask(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask(key, v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key in _RESERVED or key.startswith("_"):
                continue
            entry[key] = _mask(key, value)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        # Anything else is logged as its text, masked like the rest.
        return json.dumps(entry, default=lambda v: redact(str(v)))


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log repeats what gateway_http_requests counts, unstructured.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every backend call at INFO; gateway_backend_call_seconds counts them.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
