"""Post one chunk to `POST /v1/profiles/batch` until the gateway has settled it.

Transient trouble (429, 5xx, timeouts, refused connections) is retried with
the same idempotency key, so a retry of a write that did land is answered as a
replay. A 422 names the refused profiles by index: they are set aside and the
rest is sent again under the same key (a refused request does not use up its
key, and the reduced body is the same in every run). Any other refusal would
refuse every chunk alike, so it stops the import. A 429 for the app's quota
(`over_quota`) is the gateway saying when there is room: the chunk waits its
Retry-After (plus a little jitter) as often as it takes, without spending an
attempt, so a quota slows an import down but does not stop it.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import msgspec

from gateway.bulk_import.chunks import Chunk
from gateway.logs import redact
from gateway.schema import ErrorBody, FieldError

BATCH_PATH = "/v1/profiles/batch"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_PROFILE_PATH = re.compile(r"^profiles\[(\d+)\](?:\.(.*))?$")
Sleep = Callable[[float], Awaitable[None]]


class Fatal(Exception):
    """The gateway refuses in a way no retry or other chunk would change."""


class Abandoned(Exception):
    """The run was told to stop while this chunk waited to be (re)sent."""


@dataclass(slots=True)
class Outcome:
    accepted: int  # profiles the gateway holds for this chunk
    replayed: bool  # the gateway had stored this chunk already, in an earlier run
    refused: dict[int, list[FieldError]] = field(default_factory=dict)  # index in chunk → errors


@dataclass(slots=True)
class Retry:
    attempts: int = 10
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, min(self.cap, self.base * 2**attempt))
        return max(backoff, retry_after or 0.0)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _describe(response: httpx.Response) -> str:
    try:
        body = msgspec.json.decode(response.content, type=ErrorBody)
    except msgspec.MsgspecError:
        return f"HTTP {response.status_code}"
    details = "; ".join(f"{e.path}: {e.message}" for e in body.errors[:5])
    # Gateway messages hold no profile data, but an error message is the one
    # place a row's value could be echoed: mask it as the logs do.
    return redact(
        f"HTTP {response.status_code} {body.message}" + (f" ({details})" if details else "")
    )


def _over_quota(response: httpx.Response) -> bool:
    if response.status_code != 429:
        return False
    try:
        return msgspec.json.decode(response.content, type=ErrorBody).error == "over_quota"
    except msgspec.MsgspecError:
        return False


class Sender:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        targets: list[str] | None,
        priority: str | None = None,
        stop: asyncio.Event,
        retry: Retry | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._http = http
        self._targets = targets
        self._priority = priority
        self._stop = stop
        self._retry = retry or Retry()
        self._sleep = sleep
        self.requests = 0

    async def send(self, chunk: Chunk, key: str) -> Outcome:
        keep = list(range(len(chunk.profiles)))
        refused: dict[int, list[FieldError]] = {}
        # Each pass removes at least one profile, so this ends.
        while keep:
            response = await self._post(chunk.body(self._targets, keep, self._priority), key)
            if response.status_code == 202:
                replayed = response.headers.get("idempotent-replayed") == "true"
                return Outcome(len(keep), replayed, refused)
            if response.status_code != 422:
                raise Fatal(_describe(response))
            found = self._refused(response, keep)
            if not found:
                raise Fatal(_describe(response))
            for index, errors in found.items():
                refused[index] = errors
            keep = [i for i in keep if i not in found]
        return Outcome(0, False, refused)

    def _refused(self, response: httpx.Response, keep: list[int]) -> dict[int, list[FieldError]]:
        """The refused profiles by their index in the chunk, or {} when the
        gateway refused something other than single profiles."""
        try:
            body = msgspec.json.decode(response.content, type=ErrorBody)
        except msgspec.MsgspecError:
            return {}
        found: dict[int, list[FieldError]] = {}
        for error in body.errors:
            m = _PROFILE_PATH.match(error.path)
            if m is None or int(m.group(1)) >= len(keep):
                return {}
            found.setdefault(keep[int(m.group(1))], []).append(
                FieldError(m.group(2) or "$", error.message)
            )
        return found

    async def _post(self, body: bytes, key: str) -> httpx.Response:
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
        attempt = 0
        while True:
            if self._stop.is_set():
                raise Abandoned
            retry_after: float | None = None
            problem: str
            try:
                self.requests += 1
                response = await self._http.post(BATCH_PATH, content=body, headers=headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                problem = _describe(response)
                retry_after = _retry_after(response)
                if _over_quota(response):
                    await self._wait((retry_after or 1.0) + random.uniform(0, 0.5))
                    continue
            attempt += 1
            if attempt >= self._retry.attempts:
                raise Fatal(f"gave up after {attempt} attempts: {problem}")
            await self._wait(self._retry.delay(attempt, retry_after))

    async def _wait(self, seconds: float) -> None:
        # Backing off is where a chunk spends its time when the gateway is
        # down, so a stop request must not wait for the sleep to end.
        stopped = asyncio.ensure_future(self._stop.wait())
        slept = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({stopped, slept}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            slept.cancel()
        if self._stop.is_set():
            raise Abandoned
