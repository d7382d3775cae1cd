"""`GET /v1/dead-letters` and `POST /v1/dead-letters/replay`."""

from __future__ import annotations

import logging
import re
import typing
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import (
    ApiError,
    authenticate,
    context,
    json_response,
    read_body,
    require_json,
)
from gateway.lifecycle import REPLAYABLE as REPLAYABLE
from gateway.lifecycle import ReplayableState
from gateway.schema import BACKENDS, Backend, FieldError
from gateway.store.base import DeliveryState
from gateway.validation import field_error

log = logging.getLogger("gateway.api")

# Deliveries a person may send again (lifecycle.REPLAYABLE): retries spent,
# refused as permanent (after fixing the data or the config), or never
# confirmed by an Omneo webhook.
MAX_LIST = 1000
# Delivery ids are 64-bit signed in both stores; a larger one would overflow the
# query's parameter instead of simply matching nothing.
DeliveryId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
_LIMIT = re.compile(r"[0-9]{1,4}")


class ReplayBody(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one of `delivery_id` or `backend`."""

    delivery_id: DeliveryId | None = None
    backend: Backend | None = None
    state: ReplayableState = "dead"


def _one_of(field: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise ApiError(
            422, "invalid", f"unknown {field}", [FieldError(field, f"one of {', '.join(allowed)}")]
        )
    return value


def _backend(value: str | None) -> Backend | None:
    return typing.cast(Backend | None, _one_of("backend", value, BACKENDS))


def _state(value: str | None) -> DeliveryState:
    return typing.cast(DeliveryState, _one_of("state", value, REPLAYABLE) or "dead")


async def list_dead_letters(request: Request) -> Response:
    authenticate(request, "operate")
    q = request.query_params
    limit_text = q.get("limit", "100")
    # Not `isdigit`: it passes "²", which `int` refuses.
    if not _LIMIT.fullmatch(limit_text) or not 1 <= int(limit_text) <= MAX_LIST:
        raise ApiError(422, "invalid", "bad limit", [FieldError("limit", f"1 to {MAX_LIST}")])
    rows = await context(request).store.list_deliveries(
        [_state(q.get("state"))], backend=_backend(q.get("backend")), limit=int(limit_text)
    )
    return json_response({"dead_letters": rows})


async def replay(request: Request) -> Response:
    return await perform_replay(request, authenticate(request, "operate").app)


async def perform_replay(request: Request, app: str, via: str = "api") -> Response:
    """Requeue what the body names, for `app` (already authenticated); the
    operator page's replay button comes through here too (`via`)."""
    ctx = context(request)
    require_json(request)
    raw = await read_body(request, ctx.settings.max_body_bytes)
    try:
        body = msgspec.json.decode(raw, type=ReplayBody)
    except msgspec.ValidationError as exc:
        raise ApiError(
            422, "invalid", "the body does not match the schema", [field_error(exc)]
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "bad_json", "body is not valid JSON: nested too deeply") from None
    if (body.delivery_id is None) == (body.backend is None):
        raise ApiError(
            422,
            "invalid",
            "the body does not match the schema",
            [FieldError("$", "give exactly one of delivery_id or backend")],
        )
    result = await ctx.store.replay(
        [body.state], delivery_id=body.delivery_id, backend=body.backend
    )
    log.info(
        "replay",
        extra={
            "app": app,
            "via": via,
            "state": body.state,
            "backend": body.backend,
            "delivery_id": body.delivery_id,
            "requeued": len(result.requeued),
            "superseded": len(result.superseded),
        },
    )
    if ctx.notify is not None:
        ctx.notify(list(BACKENDS))
    return json_response(result)
