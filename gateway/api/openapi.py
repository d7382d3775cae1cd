"""`GET /openapi.json`, built from the msgspec structs rather than written by hand.

The document describes every route the app serves and every answer it gives,
errors included, so that a client generator or a schema-driven fuzzer
(tests/api/test_schemathesis.py) can hold the app to it.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import authenticate, json_response
from gateway.api.dead_letters import MAX_LIST, REPLAYABLE, ReplayBody
from gateway.api.erasure import ErasureAnswer
from gateway.schema import BACKENDS, Accepted, BatchWrite, ErrorBody, ProfileWrite
from gateway.store.base import DeadLetter, ProfileView, ReplayResult, RequestView
from gateway.ui.profile_view import ProfileSummary
from gateway.validation import MAX_SAFE_INT, OCAMBA_MAX_PROPERTIES
from gateway.webhooks.omneo import EVENTS

_REF = "#/components/schemas/{name}"
_ERRORS = {
    "400": "Unparseable JSON (not UTF-8, malformed, nested too deeply) or a bad header",
    "401": "Missing or wrong bearer token",
    "403": "The token lacks the scope this operation needs",
    "404": "Unknown id",
    "408": "The body did not all arrive within GATEWAY_BODY_READ_TIMEOUT; nothing was stored",
    "409": "Idempotency-Key reused with another body",
    "413": "Body larger than GATEWAY_MAX_BODY_BYTES",
    "413w": "Body larger than GATEWAY_MAX_BODY_BYTES, or (`batch_over_quota_burst`) more"
    " profiles than the app's quota lets through at once (GATEWAY_APP_QUOTAS); split it",
    "415": "Content-Type is not application/json (UTF-8)",
    "422": "Schema errors; `errors` lists every offending field by path",
    "429": "Too many failed authentications from this address; retry after Retry-After",
    "429w": "Too many failed authentications from this address, or (`over_quota`) the app is"
    " over its quota of profiles a second (GATEWAY_APP_QUOTAS); nothing was stored; retry"
    " after Retry-After",
    "503": "The store could not answer; nothing was stored; retry",
}
# The rules JSON Schema cannot state; they answer 422 naming the field. Stricter
# than gateway/validation.py (which strips, then refuses `\s` in Python's sense):
# the regex dialects disagree on what `\s` is, so the document spells them out.
_EMAIL = r"^[^@\s\x00-\x20\x7f-\x9f]+@[^@\s\x00-\x20\x7f-\x9f]+\.[^@.\s\x00-\x20\x7f-\x9f]{2,}$"
_PROFILE_RULES = {
    "external_id": "No control, zero-width, bidi or line separator characters.",
    "email": "Checked, lower-cased and NFC-normalized.",
    "phone": "Must be a valid number for its country (libphonenumber).",
    "attributes": (
        f"At most {OCAMBA_MAX_PROPERTIES} when ocamba is a target; integers within ±{MAX_SAFE_INT}."
    ),
}
_BODY_RULES = (
    " No string may contain U+0000. In a batch, one external_id may appear only once."
    " Duplicate object keys: the last one wins."
)
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds"}}
_AUTHENTICATE = {"WWW-Authenticate": {"schema": {"type": "string"}}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ref(struct: type) -> dict[str, Any]:
    return {"$ref": _REF.format(name=struct.__name__)}


def _errors(*codes: str) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for key in codes:
        code = key.rstrip("w")  # "429w": the write routes' own description of 429
        answers[code] = {"description": _ERRORS[key], **_json(_ref(ErrorBody))}
        if code == "401":
            answers[code]["headers"] = _AUTHENTICATE
        if code in ("429", "503"):
            answers[code]["headers"] = _RETRY_AFTER
    return answers


_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_WRITE_LINKS = {
    "GetRequest": {
        "operationId": "getRequest",
        "parameters": {"request_id": "$response.body#/request_id"},
    },
}


def _write_op(op_id: str, summary: str, body: type, links: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": op_id,
            "summary": summary,
            "description": _BODY_RULES.strip(),
            "security": _BEARER,
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    "description": "Same key and body: same answer, nothing stored twice",
                }
            ],
            "requestBody": {"required": True, **_json(_ref(body))},
            "responses": {
                "202": {
                    "description": "Stored durably; fan-out follows",
                    "headers": {
                        "Idempotent-Replayed": {
                            "schema": {"type": "string", "enum": ["true"]},
                            "description": "Present when this answers an earlier write",
                        }
                    },
                    "links": links,
                    **_json(_ref(Accepted)),
                },
                **_errors("400", "401", "403", "408", "409", "413w", "415", "422", "429w", "503"),
            },
        }
    }


def _get_op(op_id: str, summary: str, param: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": op_id,
            "summary": summary,
            "security": _BEARER,
            "parameters": [
                {"name": param, "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "Found", **_json(result)},
                **_errors("401", "403", "404", "429", "503"),
            },
        }
    }


def _erase_op() -> dict[str, Any]:
    return {
        "operationId": "eraseProfile",
        "summary": "Erasure request (erase scope): remove every stored payload of the profile",
        "description": "Profiles, webhooks naming the person (matched or not), lookup tags,"
        " backends' error texts and the Idempotency-Key records of their requests are removed;"
        " deliveries not sent yet become `erased` and are never sent. Ids and states stay."
        " Data backends already received must be erased there (see `delivered_to`).",
        "security": _BEARER,
        "parameters": [
            {"name": "external_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {"description": "Erased", **_json(_ref(ErasureAnswer))},
            **_errors("401", "403", "404", "429", "503"),
        },
    }


def _dead_letters() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "listDeadLetters",
            "summary": "Deliveries that ended dead, failed or unconfirmed (operate scope)",
            "security": _BEARER,
            "parameters": [
                {"name": "backend", "in": "query", "schema": {"enum": list(BACKENDS)}},
                {"name": "state", "in": "query", "schema": {"enum": list(REPLAYABLE)}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST},
                },
            ],
            "responses": {
                "200": {
                    "description": "Oldest first",
                    **_json(
                        {
                            "type": "object",
                            "properties": {
                                "dead_letters": {"type": "array", "items": _ref(DeadLetter)}
                            },
                            "required": ["dead_letters"],
                            "additionalProperties": False,
                        }
                    ),
                },
                **_errors("401", "403", "422", "429", "503"),
            },
        }
    }


def _replay() -> dict[str, Any]:
    return {
        "post": {
            "operationId": "replayDeadLetters",
            "summary": "Send dead letters again (operate scope): one of delivery_id or backend",
            "security": _BEARER,
            "requestBody": {"required": True, **_json(_ref(ReplayBody))},
            "responses": {
                "200": {"description": "Requeued and superseded", **_json(_ref(ReplayResult))},
                **_errors("400", "401", "403", "408", "413", "415", "422", "429", "503"),
            },
        }
    }


def _webhook() -> dict[str, Any]:
    stored = {
        "type": "object",
        "properties": {
            "status": {"enum": ["stored", "duplicate"]},
            "event_id": {"type": "integer"},
        },
        "required": ["status", "event_id"],
        "additionalProperties": False,
    }
    return {
        "post": {
            "operationId": "omneoWebhook",
            "summary": "Omneo's profile.created / profile.updated webhooks",
            "description": "Signed with HMAC-SHA256 of the raw body (hex or base64). "
            "The same body twice is stored once and applied once.",
            "security": [{"omneoSignature": []}],
            "parameters": [
                {"name": "event", "in": "path", "required": True, "schema": {"enum": list(EVENTS)}}
            ],
            "requestBody": {
                "required": True,
                **_json({"type": "object", "description": "Omneo's profile context"}),
            },
            "responses": {
                "200": {"description": "Stored (or already stored)", **_json(stored)},
                "400": {
                    "description": "Signed, but not a JSON object; it was kept",
                    **_json(_ref(ErrorBody)),
                },
                "401": {"description": "Missing or wrong signature", **_json(_ref(ErrorBody))},
                "404": {"description": "Unknown event name", **_json(_ref(ErrorBody))},
                "408": {"description": _ERRORS["408"], **_json(_ref(ErrorBody))},
                "413": {
                    "description": "Body larger than GATEWAY_WEBHOOK_MAX_BODY_BYTES",
                    **_json(_ref(ErrorBody)),
                },
                "503": {
                    "description": "No webhook secret is configured, or the store is down",
                    "headers": _RETRY_AFTER,
                    **_json(_ref(ErrorBody)),
                },
            },
        }
    }


def _plain(summary: str, ok: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "security": [], "responses": {"200": ok, **more}}}


def _tighten(components: dict[str, Any]) -> None:
    """What msgspec's schema cannot say from the structs alone."""
    for name in ("Profile", "ProfileWrite"):
        props = components[name]["properties"]
        for field, rule in _PROFILE_RULES.items():
            described = props[field]
            described["description"] = f"{described.get('description', '')} {rule}".strip()
        props["email"]["anyOf"][0]["pattern"] = _EMAIL
    replay = components["ReplayBody"]
    replay["oneOf"] = [
        {"properties": {"delivery_id": {"type": "integer"}}, "required": ["delivery_id"]},
        {"properties": {"backend": {"enum": list(BACKENDS)}}, "required": ["backend"]},
    ]
    for name in ("ProfileWrite", "BatchWrite"):
        targets = components[name]["properties"]["targets"]
        targets["anyOf"][0]["minItems"] = 1
        targets["description"] = "Default: every configured backend; each must be configured."
        props = components[name]["properties"]
        props["priority"]["description"] = (
            "The lane the write waits in: realtime is sent before bulk (backfills), which"
            " still gets a bounded share. Default: the app's lane (GATEWAY_APP_LANES),"
            " else realtime."
        )
        props["resend"]["description"] = (
            "Send every field even if a backend already has it (no change detection)."
        )


def build_openapi(signature_header: str = "X-Omneo-Hmac-SHA256") -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [
            ProfileWrite,
            BatchWrite,
            Accepted,
            ErrorBody,
            RequestView,
            ProfileView,
            DeadLetter,
            ReplayBody,
            ReplayResult,
            ErasureAnswer,
            ProfileSummary,
        ],
        ref_template=_REF,
    )
    _tighten(components)
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    profile_links = {
        **_WRITE_LINKS,
        "GetProfile": {
            "operationId": "getProfile",
            "parameters": {"external_id": "$request.body#/external_id"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Profile gateway", "version": "1"},
        "security": _BEARER,
        "paths": {
            "/v1/profiles": _write_op(
                "writeProfile", "Write one profile", ProfileWrite, profile_links
            ),
            "/v1/profiles/batch": _write_op(
                "writeBatch", "Write 1 to 1000 profiles", BatchWrite, _WRITE_LINKS
            ),
            "/v1/profiles/{external_id}": {
                **_get_op(
                    "getProfile",
                    "Latest state of a profile per backend: in full (ProfileView) with the"
                    " read scope; field names only (ProfileSummary) with write or operate",
                    "external_id",
                    {"oneOf": [_ref(ProfileView), _ref(ProfileSummary)]},
                ),
                "delete": _erase_op(),
            },
            "/v1/requests/{request_id}": _get_op(
                "getRequest",
                "Every profile of a request and its deliveries: any request with the read"
                " scope, the app's own with write (another app's is 404)",
                "request_id",
                _ref(RequestView),
            ),
            "/v1/dead-letters": _dead_letters(),
            "/v1/dead-letters/replay": _replay(),
            "/v1/webhooks/omneo/{event}": _webhook(),
            "/livez": _plain("The process is up", {"description": "Up", **_json(status)}),
            "/readyz": _plain(
                "The store answers",
                {"description": "Ready", **_json(status)},
                **{"503": {"description": "The store does not answer", **_json(status)}},
            ),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics; needs a token if GATEWAY_METRICS_TOKEN is set",
                    "security": [{}, {"bearer": []}],
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors("401", "429"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document; any valid token, whatever its scopes",
                    "security": _BEARER,
                    "responses": {
                        "200": {"description": "OpenAPI 3.1", **_json({"type": "object"})},
                        **_errors("401", "429"),
                    },
                }
            },
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "omneoSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": signature_header,
                    "description": "HMAC-SHA256 of the raw body with GATEWAY_OMNEO_WEBHOOK_SECRET",
                },
            },
        },
    }


async def openapi(request: Request) -> Response:
    # The document names every route and field: as private as the API it describes,
    # yet every app needs it, whatever its scopes.
    authenticate(request)
    return json_response(request.app.state.openapi)
