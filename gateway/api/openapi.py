"""`GET /openapi.json`, built from the msgspec structs rather than written by hand."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import json_response
from gateway.schema import Accepted, BatchWrite, ErrorBody, ProfileWrite
from gateway.store.base import ProfileView, RequestView

_REF = "#/components/schemas/{name}"
_ERRORS = {
    "400": "Unparseable JSON or a bad header",
    "401": "Missing or wrong bearer token",
    "404": "Unknown id",
    "409": "Idempotency-Key reused with another body",
    "413": "Body larger than GATEWAY_MAX_BODY_BYTES",
    "422": "Schema errors; `errors` lists every offending field by path",
    "503": "The store could not commit the write; nothing was stored",
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ref(struct: type) -> dict[str, Any]:
    return {"$ref": _REF.format(name=struct.__name__)}


def _errors(*codes: str) -> dict[str, Any]:
    return {c: {"description": _ERRORS[c], **_json(_ref(ErrorBody))} for c in codes}


def _write_op(summary: str, body: type) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 255},
                    "description": "Same key and body: same answer, nothing stored twice",
                }
            ],
            "requestBody": {"required": True, **_json(_ref(body))},
            "responses": {
                "202": {"description": "Stored durably; fan-out follows", **_json(_ref(Accepted))},
                **_errors("400", "401", "409", "413", "422", "503"),
            },
        }
    }


def _get_op(summary: str, param: str, result: type) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": [
                {"name": param, "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "Found", **_json(_ref(result))},
                **_errors("401", "404"),
            },
        }
    }


def build_openapi() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [ProfileWrite, BatchWrite, Accepted, ErrorBody, RequestView, ProfileView], ref_template=_REF
    )
    plain = {"200": {"description": "OK"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Profile gateway", "version": "1"},
        "paths": {
            "/v1/profiles": _write_op("Write one profile", ProfileWrite),
            "/v1/profiles/batch": _write_op("Write 1 to 1000 profiles", BatchWrite),
            "/v1/profiles/{external_id}": _get_op(
                "Latest state of a profile per backend", "external_id", ProfileView
            ),
            "/v1/requests/{request_id}": _get_op(
                "Every profile of a request and its deliveries", "request_id", RequestView
            ),
            "/livez": {"get": {"summary": "The process is up", "responses": plain}},
            "/readyz": {"get": {"summary": "The store answers", "responses": plain}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": plain}},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi(request: Request) -> Response:
    doc = request.app.state.openapi
    return json_response(doc)
