"""`GET /v1/requests/{request_id}`: every profile of a write and its deliveries.

A writer reads the requests its own app made (to follow its writes); another
app's request is `404` to it, as if it did not exist. `read` reads any.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import ApiError, authenticate, context, json_response


async def get_request(request: Request) -> Response:
    caller = authenticate(request, "write", "read")
    view = await context(request).store.get_request(request.path_params["request_id"])
    if view is None or not (caller.may("read") or view.app == caller.app):
        raise ApiError(404, "not_found", "no request with that id")
    return json_response(view)
