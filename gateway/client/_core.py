"""What the sync and async clients share: the requests they build, the answers
they decode, and the errors they raise. No I/O here."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from gateway.client._retry import RetryPolicy, should_retry
from gateway.schema import MAX_BATCH, Accepted, Backend, ErrorBody, Lane, Profile
from gateway.store.base import ProfileView
from gateway.ui.profile_view import ProfileSummary

T = TypeVar("T")
ProfileLike = Profile | Mapping[str, Any]
# Fields the gateway derives and never accepts back (NormalizedProfile's).
_DERIVED = ("phone_country",)
_encode = msgspec.json.Encoder().encode
MAX_KEY_LENGTH = 255


class GatewayError(Exception):
    """The gateway refused the call (`status`, its `ErrorBody` in `body` when it
    sent one), or it could not be reached and the retries are spent (`status`
    None, the last transport error as `__cause__`)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: ErrorBody | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.attempts = attempts

    @property
    def error(self) -> str | None:
        """The gateway's error code (`invalid`, `idempotency_conflict`, ...)."""
        return self.body.error if self.body else None


class PartialWriteError(GatewayError):
    """`write_many` stopped at batch `failed_batch`: the batches before it were
    accepted (`accepted`), that one and the rest were not sent or not stored.
    Calling `write_many` again with the same `idempotency_key` is safe: the
    accepted batches are answered from the gateway's records, not stored again."""

    def __init__(self, cause: GatewayError, accepted: list[Accepted], failed_batch: int) -> None:
        super().__init__(
            f"batch {failed_batch} failed after {len(accepted)} accepted: {cause}",
            status=cause.status,
            body=cause.body,
            attempts=cause.attempts,
        )
        self.accepted = accepted
        self.failed_batch = failed_batch


@dataclass(frozen=True)
class Call:
    """One logical call: sent as is on every try, its Idempotency-Key included."""

    method: str
    path: str
    body: bytes | None = None
    idempotency_key: str | None = None

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        headers = {}
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        if self.idempotency_key is not None:
            headers["Idempotency-Key"] = self.idempotency_key
        return http.build_request(self.method, self.path, content=self.body, headers=headers)


class Tries:
    """The tries of one call, as `RetryPolicy` allows them: after each, how long
    to wait before the next, or None (the answer is this response), or the
    `GatewayError` to raise when no try got an answer."""

    def __init__(self, policy: RetryPolicy, call: Call) -> None:
        self.policy = policy
        self.call = call
        self.count = 0

    def after_error(self, exc: Exception) -> float:
        self.count += 1
        if self.count >= self.policy.attempts:
            raise unreachable(self.call, exc, self.count) from exc
        return self.policy.delay(self.count - 1, None)

    def after_response(self, response: httpx.Response) -> float | None:
        self.count += 1
        if self.count >= self.policy.attempts or not should_retry(response):
            return None
        return self.policy.delay(self.count - 1, response)


def new_key() -> str:
    return str(uuid.uuid4())


def _checked_key(key: str | None) -> str:
    if key is None:
        return new_key()
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise ValueError(f"idempotency_key must be 1 to {MAX_KEY_LENGTH} characters")
    return key


def profile_fields(profile: ProfileLike) -> dict[str, Any]:
    """The profile as the API takes it. A mapping is checked against `Profile`
    here (msgspec.ValidationError, nothing sent); a NormalizedProfile loses the
    fields the gateway derives itself."""
    if not isinstance(profile, Profile):
        profile = msgspec.convert(profile, Profile)
    fields: dict[str, Any] = msgspec.to_builtins(profile)
    for name in _DERIVED:
        fields.pop(name, None)
    return fields


def _options(
    body: dict[str, Any], targets: Sequence[Backend] | None, priority: Lane | None, resend: bool
) -> dict[str, Any]:
    """`body` with the write's options; those left at their default are not
    sent, so a body (and what its Idempotency-Key covers) stays as it was."""
    if targets is not None:
        body["targets"] = list(targets)
    if priority is not None:
        body["priority"] = priority
    if resend:
        body["resend"] = True
    return body


def write_call(
    profile: ProfileLike,
    targets: Sequence[Backend] | None,
    key: str | None = None,
    *,
    priority: Lane | None = None,
    resend: bool = False,
) -> Call:
    body = _options(profile_fields(profile), targets, priority, resend)
    return Call("POST", "/v1/profiles", _encode(body), _checked_key(key))


def batch_calls(
    profiles: Iterable[ProfileLike],
    targets: Sequence[Backend] | None,
    key: str | None = None,
    batch_size: int = MAX_BATCH,
    *,
    priority: Lane | None = None,
    resend: bool = False,
) -> list[Call]:
    """One `POST /v1/profiles/batch` per `batch_size` profiles, in order, each
    with its own Idempotency-Key: `<key>-<n>` when the caller gave `key`."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be 1 to {MAX_BATCH}")
    listed = [profile_fields(p) for p in profiles]
    if key is not None:
        _checked_key(f"{key}-{len(listed) // batch_size}")
    calls = []
    for n, start in enumerate(range(0, len(listed), batch_size)):
        body = _options({"profiles": listed[start : start + batch_size]}, targets, priority, resend)
        batch_key = f"{key}-{n}" if key is not None else new_key()
        calls.append(Call("POST", "/v1/profiles/batch", _encode(body), batch_key))
    return calls


def request_status_call(request_id: str) -> Call:
    return Call("GET", f"/v1/requests/{quote(request_id, safe='')}")


def profile_status_call(external_id: str) -> Call:
    return Call("GET", f"/v1/profiles/{quote(external_id, safe='')}")


def refusal(response: httpx.Response, attempts: int) -> GatewayError:
    try:
        body: ErrorBody | None = msgspec.json.decode(response.content, type=ErrorBody)
    except msgspec.MsgspecError:
        body = None
    detail = f"{body.error}: {body.message}" if body else response.text[:200]
    return GatewayError(
        f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}",
        status=response.status_code,
        body=body,
        attempts=attempts,
    )


def unreachable(call: Call, exc: Exception, attempts: int) -> GatewayError:
    return GatewayError(
        f"{call.method} {call.path}: no answer after {attempts} attempts ({exc!r})",
        attempts=attempts,
    )


class Answer(NamedTuple):
    """The response a call ended with, and how many tries it took."""

    response: httpx.Response
    attempts: int


def decoded(answer: Answer, into: type[T]) -> T:
    response, attempts = answer
    if not response.is_success:
        raise refusal(response, attempts)
    return msgspec.json.decode(response.content, type=into)


def profile_status(answer: Answer) -> ProfileView | ProfileSummary:
    """In full with the read scope (ProfileView); field names only with write
    or operate (ProfileSummary), as the gateway decides."""
    response, attempts = answer
    if not response.is_success:
        raise refusal(response, attempts)
    keys = msgspec.json.decode(response.content, type=dict[str, msgspec.Raw])
    if "fields" in keys:
        return msgspec.json.decode(response.content, type=ProfileSummary)
    return msgspec.json.decode(response.content, type=ProfileView)
