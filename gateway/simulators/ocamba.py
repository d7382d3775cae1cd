"""Ocamba Hood simulator: create profiles, import their custom properties.

Faithful to `seeds/001_*` (create) and `seeds/000_*` (import):

- `POST /v1/hood/profiles` needs `email` or `mobile_phone_number`; answers 201
  with the documented body: a 19-20 digit string `id`, `country_code` from the
  phone number when `phonenumbers` can tell, email and phone masked.
- `POST /v1/hood/profiles/import` updates `custom_properties` of ids this
  simulator created; at most 100 properties per profile, unique ids; answers 202
  `{"message","publish_time","request_id","status":"accepted"}`.
- 400 / 500 bodies are the documented `{"code","title","message","trace_id"}`
  (500 without `message`, as documented).
- Rate limits per account (bearer token), across both endpoints, in fixed
  windows aligned to wall-clock multiples of their length; see `ocamba_limits`.

Decisions where the docs are silent:

- Auth: `Authorization: Bearer <token>`; missing or wrong is 401 with
  `{"code":401,"title":"Unauthorized.","message","trace_id"}`. 401s neither count
  against nor carry the rate-limit headers (no account is known).
- Order: outage (503) -> auth (401) -> rate limiter (429; admitted requests
  consume quota and hold an in-flight slot) -> `delay` -> error / timeout /
  throttle faults -> validation (400) -> business. Injected 500s, timeouts and
  throttles therefore consume quota, as a real backend failing after its gateway
  let the request in does; a hang holds its in-flight slot until the client
  gives up. Every answer after auth carries `X-RateLimit-Limit/Remaining/Reset`.
- 429 bodies look like the other errors: `{"code":429,"title":"Too many
  requests.",...}`; `Retry-After` is whole seconds until the full window resets
  (at least 1), or -1 for the in-flight cap.
- Create never deduplicates (the doc says it creates a new profile): a client
  that retries a create it already got a 201 for makes a second profile.
  `stats()["duplicate_creates"]` counts creates whose email or phone already
  belonged to a profile, so tests can catch it.
- `country_code` is "" when there is no phone or it does not reveal a country;
  masked fields that were not given are "". `subscription` always has both
  channels, "active" for the ones given and "inactive" otherwise.
- Import is applied at once (the doc's 202 means queued; tests want to read it
  back). A request with any invalid profile is refused whole, nothing applied.
  Property `type` must be `string`, the only type the doc shows, with a string
  value (see `ocamba_requests`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import msgspec
import phonenumbers
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from gateway.simulators.common import (
    Call,
    Handler,
    SimState,
    business_endpoint,
    control_routes,
    json_response,
)
from gateway.simulators.ocamba_limits import OcambaLimiter, OcambaLimits
from gateway.simulators.ocamba_requests import (
    BadRequest,
    parse_create,
    parse_import,
)

CREATE_PATH = "/v1/hood/profiles"
IMPORT_PATH = "/v1/hood/profiles/import"
MASK = "* * * * * * * * * *"
COMPANY_ID = "1234567"

_TITLES = {
    400: "Bad request.",
    401: "Unauthorized.",
    429: "Too many requests.",
    500: "Internal server error.",
    503: "Service unavailable.",
    504: "Gateway timeout.",
}


class OcambaProfile(msgspec.Struct, kw_only=True):
    """A created profile, unmasked, as tests want to read it back."""

    id: str
    email: str | None
    mobile_phone_number: str | None
    full_name: str
    country_code: str
    create_time: str
    update_time: str
    fields: dict[str, Any]  # the create body as sent
    custom_properties: dict[str, dict[str, Any]] = {}
    imports: int = 0


class OcambaImport(msgspec.Struct, kw_only=True):
    request_id: str
    ids: list[str]
    publish_time: str


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def country_of(phone: str | None) -> str:
    """The ISO country of an international number, or "" when it cannot tell."""
    if not phone:
        return ""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return ""
    # region_code_for_number needs a valid number to split shared codes (+1 US/CA);
    # the country code's main region is a fair guess for the rest.
    region = phonenumbers.region_code_for_number(number)
    if not region or region == "ZZ":
        region = phonenumbers.region_code_for_country_code(number.country_code or 0)
    return "" if region == "ZZ" else region


class OcambaSim(SimState):
    """`app.state.sim` of the Ocamba simulator."""

    def __init__(
        self, *, token: str, limits: OcambaLimits, clock: Callable[[], float], seed: int | None
    ) -> None:
        super().__init__(seed=seed)
        self.token = token
        self.limiter = OcambaLimiter(limits, clock)
        self.profiles: dict[str, OcambaProfile] = {}
        self.imports: list[OcambaImport] = []
        self.duplicate_creates = 0
        self._contacts: set[str] = set()  # "e:<email>" / "p:<phone>" of every create

    def error_body(self, status: int, message: str) -> Any:
        body: dict[str, Any] = {"code": status, "title": _TITLES.get(status, "Error.")}
        if status != 500:
            body["message"] = message
        body["trace_id"] = self.new_uuid()
        return body

    def stats(self) -> Any:
        return {
            **msgspec.structs.asdict(self.limiter.stats),
            "profiles": len(self.profiles),
            "imports": len(self.imports),
            "duplicate_creates": self.duplicate_creates,
            "received": len(self.received),
        }

    def profiles_view(self) -> Any:
        return list(self.profiles.values())

    def find_by_email(self, email: str) -> list[OcambaProfile]:
        return [p for p in self.profiles.values() if p.email == email]

    def _new_id(self) -> str:
        while True:
            candidate = str(self.rng.randrange(10**18, 10**20))
            if candidate not in self.profiles:
                return candidate

    def create(self, body: Any) -> Response:
        try:
            email, phone, full_name = parse_create(body)
        except BadRequest as exc:
            return self.error(400, str(exc))
        contacts = {c for c in (email and f"e:{email}", phone and f"p:{phone}") if c}
        if contacts & self._contacts:
            self.duplicate_creates += 1
        self._contacts |= contacts
        now = _now_text()
        profile = OcambaProfile(
            id=self._new_id(),
            email=email,
            mobile_phone_number=phone,
            full_name=full_name,
            country_code=country_of(phone),
            create_time=now,
            update_time=now,
            fields=dict(body),
        )
        self.profiles[profile.id] = profile
        return json_response(_created_body(profile, body), 201)

    def import_properties(self, body: Any) -> Response:
        try:
            parsed = parse_import(body, self.profiles)
        except BadRequest as exc:
            return self.error(400, str(exc))
        now = _now_text()
        for profile_id, properties in parsed:
            profile = self.profiles[profile_id]
            profile.custom_properties.update(properties)
            profile.update_time = now
            profile.imports += 1
        request_id = f"{self.rng.getrandbits(128):032x}"
        self.imports.append(
            OcambaImport(request_id=request_id, ids=[p for p, _ in parsed], publish_time=now)
        )
        return json_response(
            {
                "message": "Profiles have been queued for processing.",
                "publish_time": now,
                "request_id": request_id,
                "status": "accepted",
            },
            202,
        )


def _created_body(profile: OcambaProfile, body: dict[str, Any]) -> dict[str, Any]:
    """The documented 201 body, key for key."""

    def given(key: str, default: str) -> str:
        value = body.get(key)
        return value if isinstance(value, str) else default

    def subscription(present: bool) -> dict[str, str]:
        return {"status": "active" if present else "inactive", "create_time": profile.create_time}

    return {
        "id": profile.id,
        "company_id": COMPANY_ID,
        "status": "1",
        "container_id": "0",
        "app_type": "web",
        "app_name": "",
        "country_code": profile.country_code,
        "region": "0",
        "city": "0",
        "asn": "0",
        "os_id": "0",
        "browser_id": "0",
        "device_id": "0",
        "user_lang": given("user_lang", "en"),
        "timezone": given("timezone", ""),
        "total_pageviews": "0",
        "total_goals": "0",
        "push_wokenup": "0",
        "push_clicks": "0",
        "ad_served": "0",
        "ad_impressions": "0",
        "ad_spam_impressions": "0",
        "ad_clicks": "0",
        "ad_spam_clicks": "0",
        "ad_conversions": "0",
        "metadata": {"encrypted": ["email", "mobile_phone_number"]},
        "mobile_phone_number": MASK if profile.mobile_phone_number else "",
        "email": MASK if profile.email else "",
        "subscription": {
            "sms": subscription(profile.mobile_phone_number is not None),
            "email": subscription(profile.email is not None),
        },
        "engagement_score": 0,
        "conversion_score": "0",
        "first_session_date": profile.create_time[:10],
        "income": "0",
        "cost": "0",
        "full_name": profile.full_name,
        "create_time": profile.create_time,
        "update_time": profile.update_time,
        "total_engagements": "0",
    }


def create_ocamba_app(
    *,
    token: str = "ocamba-token",
    per_second: int = 10,
    per_minute: int = 150,
    second_window: float = 1.0,
    minute_window: float = 60.0,
    max_in_flight: int = 4,
    seed: int | None = None,
    clock: Callable[[], float] | None = None,
) -> Starlette:
    """The Ocamba Hood simulator. `clock` (default `time.time`) drives the rate
    windows only, so tests can step time instead of sleeping."""
    limits = OcambaLimits(
        per_second=per_second,
        per_minute=per_minute,
        second_window=second_window,
        minute_window=minute_window,
        max_in_flight=max_in_flight,
    )
    sim = OcambaSim(token=token, limits=limits, clock=clock or time.time, seed=seed)

    def guarded(business: Callable[[Call], Response]) -> Handler:
        async def handler(call: Call) -> Response:
            supplied = call.bearer_token()
            if supplied != sim.token:
                return sim.error(401, "A valid bearer token is required.")
            admission = sim.limiter.admit(supplied)
            if not admission.admitted:
                response = sim.error(
                    429, "Rate limit exceeded.", {"Retry-After": str(admission.retry_after)}
                )
            else:
                try:
                    response = await call.process(lambda: business(call))
                finally:
                    sim.limiter.release(supplied)
            response.headers.update(sim.limiter.headers(supplied))
            return response

        return handler

    def create(call: Call) -> Response:
        if not call.json_ok:
            return sim.error(400, "The request is not valid.")
        return sim.create(call.body)

    def import_properties(call: Call) -> Response:
        if not call.json_ok:
            return sim.error(400, "The request is not valid.")
        return sim.import_properties(call.body)

    routes = [
        Route(CREATE_PATH, business_endpoint(sim, guarded(create)), methods=["POST"]),
        Route(IMPORT_PATH, business_endpoint(sim, guarded(import_properties)), methods=["POST"]),
        *control_routes(sim),
    ]
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app


def ocamba_sim(app: Starlette) -> OcambaSim:
    """`app.state.sim`, typed."""
    sim = app.state.sim
    assert isinstance(sim, OcambaSim)
    return sim
