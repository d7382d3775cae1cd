"""import_batch: `POST /v1.1/profiles/import_batch`, one result per profile.

The answer's `result[]` repeats the order of `data[]` (seeds/003), so outcomes
are read by position; an answer whose `result` has another length cannot be
matched to the profiles sent and is retried whole rather than guessed at.

Mapping (`ImportBatchMapping`, from the mapping file or its defaults): the
fields its `fields` table names go under their names there (by default
`_fname`, `_lname`, `email`, `phone` and the gateway's `external_id`);
`profile_id` when matching by it; every other attribute as a top-level custom
field of its own name; and with `[import_batch.subscriptions]`, the consents as
`subscriptions[]` entries (channel, address, `resource_id`, `status`). An
attribute whose name would overwrite one of those fields, or a system field
(`_...`) not named in `fields`, fails its delivery instead of being sent.

Top-level error codes (the vendor publishes none; these follow the simulator's
table in `gateway.simulators.import_batch_codes`): 1-5 are about the request or
the account (bad parameter, token, db_id) and fail every profile; 6-7 (too many
profiles or bytes) split the request; 8-11 and codes we do not know are retried.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from gateway.backends.base import (
    Item,
    Outcome,
    PermanentError,
    Sender,
    TransientError,
    lane_of,
    retry_the_rest,
)
from gateway.config import Settings
from gateway.mapping.model import ImportBatchMapping
from gateway.mapping.rules import CUSTOM_MATCHING, IMPORT_BATCH_GATEWAY_FIELDS, PROFILE_ID_MATCHING
from gateway.mapping.values import restrict, source_value
from gateway.schema import Backend, NormalizedProfile

log = logging.getLogger("gateway.backends.import_batch")

IMPORT_PATH: Final = "/v1.1/profiles/import_batch"
# The vendor's advice (PRODUCT.md, seeds/003): at most 10,000 profiles and 10 MB.
MAX_PROFILES: Final = 10_000
MAX_BYTES: Final = 10_000_000
_ENVELOPE_BYTES: Final = 4_096  # token, db_id, matching, field_name and punctuation


_FAIL_ALL: Final = frozenset({1, 2, 3, 4, 5})
_TOO_BIG: Final = frozenset({6, 7})


class _Result(msgspec.Struct):
    error: int
    error_text: str = ""
    profile_id: str | None = None


class _Answer(msgspec.Struct):
    error: int
    error_text: str = ""
    result: list[_Result] | None = None


class _SplitNeeded(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


def mapped_profile(profile: NormalizedProfile, mapping: ImportBatchMapping) -> NormalizedProfile:
    """The profile as far as import_batch may see it (the mapping's exclusions)."""
    return restrict(profile, mapping.exclude, mapping.unmapped_attributes, mapping.fields)


def subscriptions(profile: NormalizedProfile, mapping: ImportBatchMapping) -> list[dict[str, Any]]:
    """seeds/003's `subscriptions[]`: one entry per consent the file gives a
    resource for, and only with the address it is about."""
    consents = profile.consents
    entries: list[dict[str, Any]] = []
    if consents is None:
        return entries
    for channel, consent, key, address in (
        ("email", consents.email, "email", profile.email),
        ("sms", consents.sms, "phone", profile.phone),
    ):
        subscription = mapping.subscriptions.get(channel)
        if subscription is None or consent is None or address is None:
            continue
        entry: dict[str, Any] = {
            "channel": channel,
            key: address,
            "resource_id": subscription.resource_id,
            "status": "subscribed" if consent else "unsubscribed",
        }
        if subscription.priority is not None:
            entry["priority"] = subscription.priority
        if subscription.cats is not None:
            entry["cats"] = list(subscription.cats)
        entries.append(entry)
    return entries


def data_item(
    profile: NormalizedProfile, backend_id: str | None, mapping: ImportBatchMapping
) -> dict[str, Any]:
    """One entry of `data[]`, from a profile already `mapped_profile`."""
    item: dict[str, Any] = {}
    for source, field in mapping.fields.items():
        value = source_value(profile, source)
        if value is not None:
            item[field] = value
    if mapping.matching in PROFILE_ID_MATCHING and backend_id is not None:
        item["profile_id"] = backend_id
    for name, value in (profile.attributes or {}).items():
        if f"attributes.{name}" not in mapping.fields:
            item[name] = value
    entries = subscriptions(profile, mapping)
    if entries:
        item["subscriptions"] = entries
    return item


def reserved_clash(profile: NormalizedProfile, mapping: ImportBatchMapping) -> str | None:
    """Why this profile's attributes cannot go out as top-level fields, or None."""
    taken = set(mapping.fields.values()) | IMPORT_BATCH_GATEWAY_FIELDS
    for name in profile.attributes or {}:
        if f"attributes.{name}" in mapping.fields:
            continue
        if name in taken or name.startswith("_"):
            return (
                f"attribute '{name}' would overwrite an import_batch field the gateway sets"
                " (system fields start with '_'); rename the attribute, or map it in the"
                " mapping file's [import_batch.fields]"
            )
    return None


def envelope(
    token: str, db_id: int, mapping: ImportBatchMapping, data: list[dict[str, Any]]
) -> dict[str, Any]:
    """The request around `data[]`; the vendor's switches only when the file sets them."""
    body: dict[str, Any] = {"token": token, "db_id": db_id, "matching": mapping.matching}
    if mapping.matching in CUSTOM_MATCHING:
        body["field_name"] = mapping.field_name
    optional = {
        "resource_id": mapping.resource_id,
        "skip_triggers": mapping.skip_triggers,
        "skip_invalid_subscriptions": mapping.skip_invalid_subscriptions,
        "detect_geo": mapping.detect_geo,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    body["data"] = data
    return body


class ImportBatchAdapter:
    name: Backend = "import_batch"

    def __init__(
        self, settings: Settings, sender: Sender, *, mapping: ImportBatchMapping | None = None
    ) -> None:
        self.batch_size = max(1, min(settings.import_batch_batch_size, MAX_PROFILES))
        self.sender = sender
        self.token = settings.import_batch_token
        self.db_id = settings.import_batch_db_id
        self.mapping = mapping or ImportBatchMapping(matching=settings.import_batch_matching)
        self.matching = self.mapping.matching
        self.resend = self.mapping.resend

    def fields(self, item: Item) -> dict[str, Any]:
        """Each field of the `data[]` entry. A change sends the whole entry:
        seeds/003 says "Adds or updates" and nowhere that a field left out is
        kept, so a partial entry could blank what the backend has."""
        return data_item(mapped_profile(item.profile, self.mapping), item.backend_id, self.mapping)

    def envelope(self, data: list[dict[str, Any]]) -> dict[str, Any]:
        return envelope(self.token, self.db_id, self.mapping, data)

    async def deliver(self, items: Sequence[Item]) -> list[Outcome]:
        done: dict[int, Outcome] = {}
        pending: list[tuple[Item, dict[str, Any], int]] = []
        for item in items:
            profile = mapped_profile(item.profile, self.mapping)
            clash = reserved_clash(profile, self.mapping)
            if clash is not None:
                done[item.delivery_id] = Outcome(item.delivery_id, "failed", clash)
                continue
            data = data_item(profile, item.backend_id, self.mapping)
            size = len(msgspec.json.encode(data)) + 1
            if size > MAX_BYTES - _ENVELOPE_BYTES:
                done[item.delivery_id] = Outcome(
                    item.delivery_id,
                    "failed",
                    f"profile is {size} bytes; import_batch takes at most {MAX_BYTES} per request",
                )
                continue
            pending.append((item, data, size))
        failure: TransientError | None = None
        try:
            for chunk in _chunks(pending, self.batch_size):
                await self._send(chunk, done)
        except TransientError as exc:
            failure = exc
        return retry_the_rest(
            items, done, failure, "import_batch: no outcome was recorded for this delivery"
        )

    async def _send(
        self, chunk: Sequence[tuple[Item, dict[str, Any], int]], done: dict[int, Outcome]
    ) -> None:
        try:
            self._read(chunk, await self._post(chunk), done)
        except _SplitNeeded as exc:
            if len(chunk) == 1:
                item = chunk[0][0]
                done[item.delivery_id] = Outcome(item.delivery_id, "failed", str(exc))
                return
            middle = len(chunk) // 2
            await self._send(chunk[:middle], done)
            await self._send(chunk[middle:], done)
        except PermanentError as exc:
            for item, _, _ in chunk:
                done[item.delivery_id] = Outcome(item.delivery_id, "failed", str(exc))

    async def _post(self, chunk: Sequence[tuple[Item, dict[str, Any], int]]) -> bytes:
        body = self.envelope([data for _, data, _ in chunk])
        try:
            response = await self.sender.post(
                "import", IMPORT_PATH, json=body, lane=lane_of([item for item, _, _ in chunk])
            )
        except PermanentError as exc:
            if exc.status == 413:
                raise _SplitNeeded(str(exc)) from None
            raise
        return response.content

    def _read(
        self,
        chunk: Sequence[tuple[Item, dict[str, Any], int]],
        content: bytes,
        done: dict[int, Outcome],
    ) -> None:
        try:
            answer = msgspec.json.decode(content, type=_Answer)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise TransientError(f"import_batch import: unreadable answer ({exc})") from None
        if answer.error != 0:
            message = f"import_batch import: error {answer.error}: {answer.error_text}"
            if answer.error in _TOO_BIG:
                raise _SplitNeeded(message)
            if answer.error in _FAIL_ALL:
                raise PermanentError(message)
            raise TransientError(message)
        results = answer.result or []
        if len(results) != len(chunk):
            raise TransientError(
                f"import_batch import: {len(results)} results for {len(chunk)} profiles;"
                " cannot tell which result belongs to which profile"
            )
        for (item, _, _), result in zip(chunk, results, strict=True):
            delivery_id = item.delivery_id
            if result.error == 0:
                done[delivery_id] = Outcome(delivery_id, "confirmed", backend_id=result.profile_id)
            else:
                error = f"import_batch error {result.error}: {result.error_text}"
                done[delivery_id] = Outcome(delivery_id, "failed", error)
        log.info("import_batch imported", extra={"count": len(chunk)})


def _chunks(
    entries: Sequence[tuple[Item, dict[str, Any], int]], max_count: int
) -> list[Sequence[tuple[Item, dict[str, Any], int]]]:
    """Consecutive runs of at most `max_count` profiles and MAX_BYTES per request."""
    chunks: list[Sequence[tuple[Item, dict[str, Any], int]]] = []
    start, size = 0, _ENVELOPE_BYTES
    for index, (_, _, item_size) in enumerate(entries):
        if index > start and (index - start >= max_count or size + item_size > MAX_BYTES):
            chunks.append(entries[start:index])
            start, size = index, _ENVELOPE_BYTES
        size += item_size
    if start < len(entries):
        chunks.append(entries[start:])
    return chunks
