"""What each backend last accepted of a person, per field (`sent_fields`).

The dispatcher reads it before a send to leave out what the backend has
(gateway/dispatch/changes.py); the record step of each engine's queue writes
it, in the same statement or transaction as the outcome it comes from. The
digests are keyed (the blind-index key when encryption is on): the table
holds no profile data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.schema import Backend
from gateway.store.plans import Fetch, Plan


def _digests(value: Any) -> dict[str, str]:
    """A `digests` column: jsonb from PostgreSQL (text via asyncpg), JSON text from SQLite."""
    loaded = json.loads(value) if isinstance(value, str | bytes) else value
    return {str(k): str(v) for k, v in dict(loaded).items()}


def sent_fields(backend: Backend, external_ids: Sequence[str]) -> Plan[dict[str, dict[str, str]]]:
    """external_id -> {field: digest} for those of `external_ids` the backend has."""
    if not external_ids:
        return {}
    rows = yield Fetch("sent_fields", (backend, list(dict.fromkeys(external_ids))))
    return {r[0]: _digests(r[1]) for r in rows}
