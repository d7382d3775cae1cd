"""What a backend would be sent for one profile, built by the adapters' own
body builders and sent nowhere (`gateway mapping preview`).

The one thing a preview cannot know is what the backend answers: Ocamba's
import names the id its create answers with (`OCAMBA_ID_PLACEHOLDER`, unless
the caller gives one), and Omneo's `import_job_id` is derived from delivery
ids (the preview uses delivery 1).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from gateway.backends import import_batch, ocamba, omneo
from gateway.backends.base import Item
from gateway.backends.omneo_keys import match_key_of_profile
from gateway.config import Settings
from gateway.mapping.model import Mappings
from gateway.mapping.values import ValueProblem
from gateway.schema import Backend, NormalizedProfile

OCAMBA_ID_PLACEHOLDER: Final = "<id from the create's answer>"
TOKEN_PLACEHOLDER: Final = "<GATEWAY_IMPORT_BATCH_TOKEN>"


class Refused(Exception):
    """The adapter would fail this delivery without sending it; the message says why."""


class Request(NamedTuple):
    path: str
    body: dict[str, Any]


def requests_for(
    backend: Backend,
    profile: NormalizedProfile,
    mapping: Mappings,
    settings: Settings,
    *,
    backend_id: str | None = None,
) -> list[Request]:
    """The requests, in order, that would carry this profile to `backend`.
    `backend_id`: the id the backend gave the person before, if any."""
    try:
        if backend == "ocamba":
            return _ocamba(profile, mapping, backend_id)
        if backend == "omneo":
            return _omneo(profile, mapping)
        return _import_batch(profile, mapping, settings, backend_id)
    except ValueProblem as exc:
        raise Refused(str(exc)) from None


def _ocamba(profile: NormalizedProfile, mapping: Mappings, backend_id: str | None) -> list[Request]:
    m = mapping.ocamba
    mapped = ocamba.mapped_profile(profile, m)
    reason = ocamba.unsendable(mapped, m, known=backend_id is not None)
    if reason is not None:
        raise Refused(reason)
    requests = []
    if backend_id is None:
        requests.append(Request(ocamba.CREATE_PATH, ocamba.create_body(mapped)))
    if ocamba.custom_properties(mapped, m):
        body = ocamba.import_body([(backend_id or OCAMBA_ID_PLACEHOLDER, mapped)], m)
        requests.append(Request(ocamba.IMPORT_PATH, body))
    return requests


def _omneo(profile: NormalizedProfile, mapping: Mappings) -> list[Request]:
    m = mapping.omneo
    mapped = omneo.mapped_profile(profile, m)
    if match_key_of_profile(mapped, m.match_criteria, m.identities) is None:
        raise Refused(omneo.missing_key_reason(m.match_criteria))
    return [Request(omneo.BATCH_PATH, omneo.batch_body(m, [Item(1, mapped)]))]


def _import_batch(
    profile: NormalizedProfile, mapping: Mappings, settings: Settings, backend_id: str | None
) -> list[Request]:
    m = mapping.import_batch
    mapped = import_batch.mapped_profile(profile, m)
    clash = import_batch.reserved_clash(mapped, m)
    if clash is not None:
        raise Refused(clash)
    data = import_batch.data_item(mapped, backend_id, m)
    body = import_batch.envelope(TOKEN_PLACEHOLDER, settings.import_batch_db_id, m, [data])
    return [Request(import_batch.IMPORT_PATH, body)]
