"""import_batch simulator: `POST /api/v1.1/profiles/import_batch`.

Faithful to `seeds/003_*`: a JSON body with `token`, `db_id`, `matching` (default
"email"; every mode the doc lists is accepted, see `import_batch_store`), `data[]`
and optional `field_name`, `skip_triggers`, `skip_invalid_subscriptions`,
`detect_geo`, `resource_id`. It answers `{"error":0,"error_text":"Successful
operation","result":[...]}` with one result per data item in input order: a
`profile_id` on success, a non-zero `error` / `error_text` otherwise. The vendor
advises at most 10,000 profiles and 10 MB per request; beyond that is a 413.

Decisions where the doc is silent (codes in `import_batch_codes`):

- Error bodies are `{"error": <non-zero>, "error_text": ...}` only, with HTTP
  400 (bad JSON, missing or mistyped parameter), 401 (wrong token), 404 (wrong
  `db_id`), 413 (too many profiles, too many bytes), and for the faults 429,
  500, 503, 504.
- Order: outage (503) -> size (413, before parsing, as a body limit at the edge
  is) -> JSON (400) -> token (400 if missing, 401 if wrong) -> `delay` -> error /
  timeout / throttle faults -> other parameters (400) -> db_id (404) -> profile
  count (413) -> per-profile results.
- The token is read from the body only, as the doc's parameter table has it.
- Only JSON is simulated; an XML body is not JSON, hence 400.
- The database has the fields it was started with (`import_batch_fields`):
  an item naming another field, or a `field_name` that is not one of its
  custom fields, gets a per-profile error (106, 107), as a real database
  refuses data it has no column for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from gateway.simulators.common import (
    Call,
    SimState,
    business_endpoint,
    control_routes,
    json_response,
)
from gateway.simulators.import_batch_codes import (
    PROFILE_ERRORS,
    SUCCESS_TEXT,
    ErrorCode,
)
from gateway.simulators.import_batch_fields import DEFAULT_CUSTOM_FIELDS, DatabaseFields, ItemError
from gateway.simulators.import_batch_store import (
    CUSTOM_MODES,
    MATCHING_MODES,
    ImportBatchStore,
    StoredProfile,
)

# seeds/003's request URL is https://example.com/api/v1.1/profiles/import_batch:
# the API root ends in /api, so a client whose base URL lacks it gets a 404 here
# as it would from the vendor. `/_sim/*` stays at the server's root.
API_ROOT = "/api"
IMPORT_BATCH_PATH = API_ROOT + "/v1.1/profiles/import_batch"
OPTIONAL_BOOLS = ("skip_invalid_subscriptions", "skip_triggers", "detect_geo")

_FAULT_CODES = {
    429: (ErrorCode.RATE_LIMITED, "Too many requests"),
    500: (ErrorCode.INTERNAL_ERROR, "Internal server error"),
    503: (ErrorCode.SERVICE_UNAVAILABLE, "Service unavailable"),
    504: (ErrorCode.TIMEOUT, "Gateway timeout"),
}


class RequestError(Exception):
    def __init__(self, status: int, code: ErrorCode, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.code = code
        self.text = text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ImportBatchSim(SimState):
    """`app.state.sim` of the import_batch simulator."""

    def __init__(
        self,
        *,
        token: str,
        db_id: int,
        max_profiles: int,
        max_bytes: int,
        fields: Iterable[str],
        seed: int | None,
    ) -> None:
        super().__init__(seed=seed)
        self.token = token
        self.db_id = db_id
        self.max_profiles = max_profiles
        self.max_bytes = max_bytes
        self.fields = DatabaseFields(fields)
        self.store = ImportBatchStore(db_id, self.fields)
        self.created = 0
        self.updated = 0
        self.profile_errors: dict[int, int] = {}  # code -> count

    @property
    def profiles(self) -> dict[str, StoredProfile]:
        return self.store.profiles

    def error_body(self, status: int, message: str) -> Any:
        code, text = _FAULT_CODES.get(status, (ErrorCode.INTERNAL_ERROR, message))
        return {"error": code, "error_text": text}

    def request_error(self, exc: RequestError) -> Response:
        return json_response({"error": exc.code, "error_text": exc.text}, exc.status)

    def stats(self) -> Any:
        return {
            "custom_fields": sorted(self.fields.custom),
            "profiles": len(self.store.profiles),
            "created": self.created,
            "updated": self.updated,
            "profile_errors": {str(k): v for k, v in sorted(self.profile_errors.items())},
            "received": len(self.received),
        }

    def profiles_view(self) -> Any:
        return list(self.store.profiles.values())

    def check_token(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise RequestError(400, ErrorCode.INVALID_REQUEST, "Request body must be a JSON object")
        token = body.get("token")
        if token is None:
            raise RequestError(400, ErrorCode.MISSING_PARAMETER, "Missing parameter: token")
        if not isinstance(token, str):
            raise RequestError(400, ErrorCode.INVALID_PARAMETER, "Invalid parameter: token")
        if token != self.token:
            raise RequestError(401, ErrorCode.INVALID_TOKEN, "Invalid token")

    def parse(self, body: dict[str, Any]) -> tuple[list[Any], str, str | None]:
        """Checks the request parameters; returns (data, matching, field_name)."""

        def missing(name: str) -> RequestError:
            return RequestError(400, ErrorCode.MISSING_PARAMETER, f"Missing parameter: {name}")

        def invalid(name: str, why: str) -> RequestError:
            text = f"Invalid parameter: {name} {why}"
            return RequestError(400, ErrorCode.INVALID_PARAMETER, text)

        if body.get("db_id") is None:
            raise missing("db_id")
        if not _is_int(body["db_id"]):
            raise invalid("db_id", "must be an integer")
        matching = body.get("matching")
        if matching is None:
            matching = "email"
        if not isinstance(matching, str) or matching not in MATCHING_MODES:
            raise invalid("matching", "must be one of " + ", ".join(MATCHING_MODES))
        field_name = body.get("field_name")
        if field_name is not None and not isinstance(field_name, str):
            raise invalid("field_name", "must be a string")
        if matching in CUSTOM_MODES and not field_name:
            raise missing("field_name")
        if body.get("data") is None:
            raise missing("data")
        if not isinstance(body["data"], list):
            raise invalid("data", "must be an array")
        for name in OPTIONAL_BOOLS:
            if body.get(name) is not None and not isinstance(body[name], bool):
                raise invalid(name, "must be a boolean")
        if body.get("resource_id") is not None and not _is_int(body["resource_id"]):
            raise invalid("resource_id", "must be an integer")
        if body["db_id"] != self.db_id:
            raise RequestError(404, ErrorCode.DATABASE_NOT_FOUND, "Database not found")
        if len(body["data"]) > self.max_profiles:
            raise RequestError(
                413,
                ErrorCode.TOO_MANY_PROFILES,
                f"Too many profiles: at most {self.max_profiles} per request",
            )
        return body["data"], matching, field_name

    def import_batch(self, body: dict[str, Any]) -> Response:
        try:
            data, matching, field_name = self.parse(body)
        except RequestError as exc:
            return self.request_error(exc)
        results = [self._import_one(item, matching, field_name) for item in data]
        return json_response({"error": ErrorCode.OK, "error_text": SUCCESS_TEXT, "result": results})

    def _import_one(self, item: Any, matching: str, field_name: str | None) -> dict[str, Any]:
        try:
            profile, created = self.store.import_item(item, matching, field_name)
        except ItemError as exc:
            assert exc.code in PROFILE_ERRORS
            self.profile_errors[exc.code] = self.profile_errors.get(exc.code, 0) + 1
            return {"error": exc.code, "error_text": exc.text}
        if created:
            self.created += 1
        else:
            self.updated += 1
        return {"error": ErrorCode.OK, "error_text": SUCCESS_TEXT, "profile_id": profile.profile_id}


def create_import_batch_app(
    *,
    token: str = "import-batch-token",
    db_id: int = 1,
    max_profiles: int = 10_000,
    max_bytes: int = 10 * 1024 * 1024,
    fields: Iterable[str] = DEFAULT_CUSTOM_FIELDS,
    seed: int | None = None,
) -> Starlette:
    """The import_batch simulator, serving `/api/v1.1/profiles/import_batch`.
    `fields`: the database's custom fields (its system fields are always there)."""
    sim = ImportBatchSim(
        token=token,
        db_id=db_id,
        max_profiles=max_profiles,
        max_bytes=max_bytes,
        fields=fields,
        seed=seed,
    )

    async def handler(call: Call) -> Response:
        try:
            if len(call.raw) > sim.max_bytes:
                raise RequestError(
                    413,
                    ErrorCode.REQUEST_TOO_LARGE,
                    f"Request body too large: at most {sim.max_bytes} bytes",
                )
            if not call.json_ok:
                raise RequestError(400, ErrorCode.INVALID_REQUEST, "Request body is not valid JSON")
            sim.check_token(call.body)
        except RequestError as exc:
            return sim.request_error(exc)
        body: dict[str, Any] = call.body
        return await call.process(lambda: sim.import_batch(body))

    routes = [
        Route(IMPORT_BATCH_PATH, business_endpoint(sim, handler), methods=["POST"]),
        *control_routes(sim),
    ]
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app


def import_batch_sim(app: Starlette) -> ImportBatchSim:
    """`app.state.sim`, typed."""
    sim = app.state.sim
    assert isinstance(sim, ImportBatchSim)
    return sim


__all__ = [
    "API_ROOT",
    "DEFAULT_CUSTOM_FIELDS",
    "IMPORT_BATCH_PATH",
    "PROFILE_ERRORS",
    "ErrorCode",
    "ImportBatchSim",
    "StoredProfile",
    "create_import_batch_app",
    "import_batch_sim",
]
