"""`GET /v1/requests/{request_id}`: every profile of a write and its deliveries."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import ApiError, authenticate, context, json_response


async def get_request(request: Request) -> Response:
    authenticate(request)
    view = await context(request).store.get_request(request.path_params["request_id"])
    if view is None:
        raise ApiError(404, "not_found", "no request with that id")
    return json_response(view)
