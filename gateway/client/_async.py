"""`AsyncGatewayClient`: the gateway's API over httpx, for asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType

import httpx

from gateway.client import _core
from gateway.client._core import Answer, Call, GatewayError, PartialWriteError, ProfileLike, Tries
from gateway.client._retry import RETRY_ERRORS, RetryPolicy
from gateway.schema import MAX_BATCH, Accepted, Backend, Lane
from gateway.store.base import ProfileView, RequestView
from gateway.ui.profile_view import ProfileSummary


class AsyncGatewayClient:
    """As `GatewayClient`, awaited: the same calls, retries and keys.

    `http` replaces the httpx client this one would make (then `base_url`,
    `token` and `timeout` are not used, and closing it stays the caller's);
    `sleep` is what waits between retries (tests pass their own).
    """

    def __init__(
        self,
        base_url: str = "",
        token: str = "",
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        batch_size: int = MAX_BATCH,
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._owned = http is None
        self._http = http or httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )
        self.retry = retry or RetryPolicy()
        self.batch_size = batch_size
        self._sleep = sleep

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def send(self, call: Call) -> Answer:
        """The call's answer once it is not one to retry (or the retries are
        spent), and how many tries it took; `GatewayError` when no try got an answer."""
        tries = Tries(self.retry, call)
        while True:
            try:
                response = await self._http.send(call.request(self._http))
            except RETRY_ERRORS as exc:
                await self._sleep(tries.after_error(exc))
                continue
            wait = tries.after_response(response)
            if wait is None:
                return Answer(response, tries.count)
            await response.aclose()
            await self._sleep(wait)

    async def write(
        self,
        profile: ProfileLike,
        targets: Sequence[Backend] | None = None,
        *,
        idempotency_key: str | None = None,
        priority: Lane | None = None,
        resend: bool = False,
    ) -> Accepted:
        """`POST /v1/profiles`: accepted once the gateway stored it durably."""
        call = _core.write_call(profile, targets, idempotency_key, priority=priority, resend=resend)
        return _core.decoded(await self.send(call), Accepted)

    async def write_many(
        self,
        profiles: Iterable[ProfileLike],
        targets: Sequence[Backend] | None = None,
        *,
        idempotency_key: str | None = None,
        priority: Lane | None = None,
        resend: bool = False,
    ) -> list[Accepted]:
        """`POST /v1/profiles/batch` per `batch_size` profiles, one after another:
        one `Accepted` per batch, in order. `PartialWriteError` says which were."""
        accepted: list[Accepted] = []
        calls = _core.batch_calls(
            profiles, targets, idempotency_key, self.batch_size, priority=priority, resend=resend
        )
        for n, call in enumerate(calls):
            try:
                accepted.append(_core.decoded(await self.send(call), Accepted))
            except GatewayError as exc:
                raise PartialWriteError(exc, accepted, n) from exc
        return accepted

    async def request_status(self, request_id: str) -> RequestView:
        """`GET /v1/requests/{request_id}`: every profile and its deliveries."""
        return _core.decoded(await self.send(_core.request_status_call(request_id)), RequestView)

    async def profile_status(self, external_id: str) -> ProfileView | ProfileSummary:
        """`GET /v1/profiles/{external_id}`: in full with the read scope, field
        names only with write or operate."""
        return _core.profile_status(await self.send(_core.profile_status_call(external_id)))
