"""`DELETE /v1/profiles/{external_id}`: an erasure request.

Removes what the gateway holds of the person: the profile of every write, the
Omneo webhooks that named them (matched or not), their lookup tags, backends'
error texts and the Idempotency-Key records of their requests; their
deliveries not sent yet are cancelled (state `erased`) and never sent. Ids, states and times stay,
so the audit trail shows that there was a person and that they were erased.
external_id is one person's key shared by every calling app (README, "Who
is a person"), so the erasure covers what every app wrote of them; it needs
a token with the `erase` scope.

The gateway cannot erase what backends already received (none of them
documents a delete API it could call); the answer names those backends and
the ids they gave the person, for the caller to take it up with them.
"""

from __future__ import annotations

import logging

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import profiles
from gateway.api.common import ApiError, authenticate, context, json_response
from gateway.schema import Backend

log = logging.getLogger("gateway.api")

NOTE = (
    "The gateway no longer holds this person's profile. Backends listed in"
    " delivered_to received it before the erasure (deliveries_in_flight were being sent"
    " at that moment and may have arrived too): erase it there as well, using backend_ids."
)


class ErasureAnswer(msgspec.Struct):
    external_id: str
    erased: bool  # always true: the answer comes only once the erasure is committed
    writes_erased: int
    deliveries_cancelled: int
    deliveries_in_flight: int
    webhook_events_erased: int
    delivered_to: list[Backend]
    backend_ids: dict[str, str]
    note: str


async def profile_resource(request: Request) -> Response:
    """GET and DELETE of one path on one route, so that a 405 lists both in Allow."""
    if request.method == "DELETE":
        return await delete_profile(request)
    return await profiles.get_profile(request)


async def delete_profile(request: Request) -> Response:
    app = authenticate(request, "erase").app
    external_id = request.path_params["external_id"]
    erasure = await context(request).store.erase_profile(external_id)
    if erasure is None:
        raise ApiError(404, "not_found", "no profile with that external_id")
    # Counts only: the external_id may itself be personal data a caller chose badly.
    log.info(
        "profile erased",
        extra={
            "app": app,
            "writes": erasure.writes_erased,
            "cancelled": erasure.deliveries_cancelled,
            "in_flight": erasure.deliveries_in_flight,
            "webhook_events": erasure.webhook_events_erased,
        },
    )
    return json_response(
        ErasureAnswer(
            external_id=erasure.external_id,
            erased=True,
            writes_erased=erasure.writes_erased,
            deliveries_cancelled=erasure.deliveries_cancelled,
            deliveries_in_flight=erasure.deliveries_in_flight,
            webhook_events_erased=erasure.webhook_events_erased,
            delivered_to=erasure.delivered_to,
            backend_ids=erasure.backend_ids,
            note=NOTE,
        )
    )
