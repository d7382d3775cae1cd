"""Omneo: one `POST /v3/profiles/batch` per batch of up to 500 profiles.

Omneo queues the batch and answers at once; whether each profile was created
or updated arrives later as a `profile.created` / `profile.updated` webhook, so
a sent item is only `accepted` here. Every outcome carries the profile's
`match_key` (`omneo_keys.match_key_of_profile`, shared with the webhook
receiver), which is how the webhook that confirms it finds the delivery.

Decisions where Omneo's doc (seeds/002, seeds/004) is silent:

- `custom_attributes[].value` is sent as a string, because the doc's schema types
  it as one (`"value": "<string>"`), with `type` "string", the only type the doc
  shows; an attribute the mapping file types `date` goes to `dates_attributes`
  instead, the doc's own place for dates.
- `gender`: the doc shows only "male" (the first value of its enum); "female" is
  sent too, "other"/"unknown" are dropped rather than risk a rejected batch.
- A batch Omneo refuses as a whole with 400/422 is split in halves to find the
  profiles it objects to, within a small budget of extra calls, so that one bad
  profile does not fail hundreds of good ones.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
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
from gateway.backends.omneo_keys import match_key_of_profile
from gateway.config import Settings
from gateway.mapping.model import OmneoMapping
from gateway.mapping.values import (
    WIRE_TYPE,
    ValueProblem,
    as_text,
    custom_properties,
    restrict,
    source_value,
)
from gateway.schema import Address, Backend, NormalizedProfile

log = logging.getLogger("gateway.backends.omneo")

BATCH_PATH: Final = "/v3/profiles/batch"
MAX_BATCH: Final = 500  # seeds/002: 1-500 profiles
GENDERS: Final = frozenset({"male", "female"})

_SPLIT_ON: Final = frozenset({400, 422})
_SPLIT_BUDGET: Final = 20  # extra calls one `deliver` may spend isolating bad profiles


class _SplitBudget:
    """Extra calls one `deliver` may still spend isolating refused profiles."""

    def __init__(self, calls: int) -> None:
        self.calls = calls

    def take(self, calls: int) -> bool:
        if self.calls < calls:
            return False
        self.calls -= calls
        return True


class _Queued(msgspec.Struct):
    batch_id: str | None = None


class _BatchAnswer(msgspec.Struct):
    data: _Queued | None = None


def missing_key_reason(match_criteria: str) -> str:
    if match_criteria == "email":
        return "Omneo matches profiles by email (match_criteria), and this profile has none"
    return (
        f"Omneo matches profiles by the '{match_criteria}' identity (match_criteria),"
        " and this profile has none"
    )


def import_job_id(items: Sequence[Item]) -> str:
    """Deterministic per set of deliveries, so a retried batch is recognisable."""
    ids = ",".join(str(i) for i in sorted(item.delivery_id for item in items))
    return "gw-" + hashlib.sha256(ids.encode()).hexdigest()[:24]


def _address(address: Address) -> dict[str, Any]:
    body: dict[str, Any] = {
        key: value for key, value in msgspec.structs.asdict(address).items() if value is not None
    }
    if address.country is not None:
        body["iso"] = address.country
    return body


def mapped_profile(profile: NormalizedProfile, mapping: OmneoMapping) -> NormalizedProfile:
    """The profile as far as Omneo may see it (the mapping's exclusions)."""
    return restrict(profile, mapping.exclude, mapping.unmapped_attributes, mapping.fields)


def identities(profile: NormalizedProfile, mapping: OmneoMapping) -> dict[str, str]:
    """The profile's own identities, and those the mapping makes of its fields
    (which win: one handle names one identifier)."""
    found = dict(profile.identities or {})
    for handle, source in mapping.identities.items():
        value = source_value(profile, source)
        if value is not None:
            found[handle] = str(value)
    return found


def profile_body(profile: NormalizedProfile, mapping: OmneoMapping | None = None) -> dict[str, Any]:
    """One entry of `profiles[]`: only fields given, so a batch never blanks a
    field Omneo has (and Omneo's merge leaves absent fields alone). `profile`
    is already `mapped_profile`; raises `ValueProblem` when the mapping's
    types cannot hold its values."""
    mapping = mapping or OmneoMapping()
    body: dict[str, Any] = {}
    for key in ("first_name", "last_name", "email", "title", "company", "occupation"):
        value = getattr(profile, key)
        if value is not None:
            body[key] = value
    if profile.gender in GENDERS:
        body["gender"] = profile.gender
    if profile.phone is not None:
        body["mobile_phone"] = profile.phone
    if profile.birth_date is not None:
        body["birth_day"] = profile.birth_date.day
        body["birth_month"] = profile.birth_date.month
        body["birth_year"] = profile.birth_date.year
    if profile.tags is not None:
        body["tags"] = list(profile.tags)
    handles = identities(profile, mapping)
    if handles:
        body["identities"] = [
            {"handle": handle, "identifier": identifier, "is_active": True}
            for handle, identifier in handles.items()
        ]
    attributes = custom_properties(profile, mapping.fields, mapping.attribute_types)
    texts = [prop for prop in attributes if prop.type != "date"]
    if texts:
        body["custom_attributes"] = [
            {
                "namespace": mapping.attribute_namespace,
                "handle": prop.name,
                "type": WIRE_TYPE,
                "value": as_text(prop.value),
            }
            for prop in texts
        ]
    dates = [prop for prop in attributes if prop.type == "date"]
    if dates:
        # The doc's own place for a date, checked there as Y-m-d; a custom
        # attribute could only carry it as text.
        body["dates_attributes"] = [
            {"handle": prop.name, "name": prop.name, "date": as_text(prop.value)} for prop in dates
        ]
    if profile.addresses is not None:
        body["addresses"] = [_address(address) for address in profile.addresses]
    comms: dict[str, bool] = {}
    if profile.consents is not None:
        if profile.consents.email is not None:
            comms["email_promo"] = profile.consents.email
        if profile.consents.sms is not None:
            comms["sms_promo"] = profile.consents.sms
    if comms:
        body["comms_attributes"] = comms
    return body


def batch_body(
    mapping: OmneoMapping,
    items: Sequence[Item],
    bodies: Mapping[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`items` hold mapped profiles; `bodies`, their entries built already."""
    return {
        "match_criteria": mapping.match_criteria,
        "profiles": [
            bodies[item.delivery_id] if bodies else profile_body(item.profile, mapping)
            for item in items
        ],
        "import_job_id": import_job_id(items),
    }


class OmneoAdapter:
    name: Backend = "omneo"

    def __init__(
        self, settings: Settings, sender: Sender, *, mapping: OmneoMapping | None = None
    ) -> None:
        self.batch_size = max(1, min(settings.omneo_batch_size, MAX_BATCH))
        self.mapping = mapping or OmneoMapping(match_criteria=settings.omneo_match_criteria)
        self.match_criteria = self.mapping.match_criteria
        self.resend = self.mapping.resend
        self.sender = sender

    async def deliver(self, items: Sequence[Item]) -> list[Outcome]:
        done: dict[int, Outcome] = {}
        sendable: list[Item] = []
        bodies: dict[int, dict[str, Any]] = {}
        for item in items:
            item = msgspec.structs.replace(item, profile=mapped_profile(item.profile, self.mapping))
            if self._key(item) is None:
                reason = missing_key_reason(self.match_criteria)
                done[item.delivery_id] = Outcome(item.delivery_id, "failed", reason)
                continue
            try:
                bodies[item.delivery_id] = profile_body(item.profile, self.mapping)
            except ValueProblem as exc:
                done[item.delivery_id] = Outcome(
                    item.delivery_id, "failed", f"omneo: {exc}", match_key=self._key(item)
                )
                continue
            sendable.append(item)
        budget = _SplitBudget(_SPLIT_BUDGET)
        failure: TransientError | None = None
        try:
            for chunk in _chunks(sendable, self.batch_size):
                await self._send(chunk, bodies, done, budget)
        except TransientError as exc:
            failure = exc
        return retry_the_rest(
            items, done, failure, "omneo: no outcome was recorded for this delivery", self._key
        )

    def fields(self, item: Item) -> dict[str, Any]:
        """Each field of the `profiles[]` entry. A change sends the whole entry:
        seeds/002 matches by `match_criteria` and creates a profile when none
        matches, so a partial entry could create an incomplete one."""
        return profile_body(mapped_profile(item.profile, self.mapping), self.mapping)

    def _key(self, item: Item) -> str | None:
        return match_key_of_profile(item.profile, self.match_criteria, self.mapping.identities)

    async def _send(
        self,
        chunk: Sequence[Item],
        bodies: Mapping[int, dict[str, Any]],
        done: dict[int, Outcome],
        budget: _SplitBudget,
    ) -> None:
        body = batch_body(self.mapping, chunk, bodies)
        # Taken before the call, pacing wait included: Omneo cannot report a
        # profile before this, so an earlier webhook is never about this write.
        sent_at = time.time()
        try:
            response = await self.sender.post("batch", BATCH_PATH, json=body, lane=lane_of(chunk))
        except PermanentError as exc:
            if exc.status in _SPLIT_ON and len(chunk) > 1 and budget.take(2):
                middle = len(chunk) // 2
                await self._send(chunk[:middle], bodies, done, budget)
                await self._send(chunk[middle:], bodies, done, budget)
                return
            for item in chunk:
                done[item.delivery_id] = Outcome(
                    item.delivery_id, "failed", str(exc), match_key=self._key(item)
                )
            return
        for item in chunk:
            # The key goes with the outcome: it is how the confirming webhook
            # will find this delivery.
            done[item.delivery_id] = Outcome(
                item.delivery_id, "accepted", match_key=self._key(item), sent_at=sent_at
            )
        log.info(
            "omneo batch queued",
            extra={
                "count": len(chunk),
                "import_job_id": body["import_job_id"],
                "batch_id": _batch_id(response.content),
            },
        )


def _batch_id(content: bytes) -> str | None:
    # Only for the log: a 2xx is acceptance whatever its body says.
    try:
        answer = msgspec.json.decode(content, type=_BatchAnswer)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return answer.data.batch_id if answer.data else None


def _chunks(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
