"""Ocamba Hood: create profiles one by one, then import their custom properties.

Ocamba has no upsert. A profile it has never seen (no `backend_id` yet) is
created with `POST /v1/hood/profiles` (201 with its `id`, synchronous); every
profile with custom properties (its attributes, and the fields the mapping's
`fields` sends as properties) then goes through `POST /v1/hood/profiles/import`,
which only updates `custom_properties` of existing ids and answers 202 (queued,
never confirmed later). Each item's profile is first cut down to what the
mapping lets Ocamba see (`exclude`). Consequences:

- A profile Ocamba already knows gets only its attributes: changes to its email,
  phone or name cannot reach Ocamba through these two endpoints (seeds/000: the
  import "is strictly for updating existing profiles" and takes `id` and
  `custom_properties` only; seeds/001 only creates). A write whose only changes
  (or, when the dispatcher does not know what changed, whose only content) are
  those ends `unsupported` with that reason, nothing sent.
- Change detection (`fields`, `Item.changed`): an import carries only the
  custom properties that changed; Ocamba's import updates the properties it is
  given (seeds/000 shows profiles with different property sets in one call).
- A create that got its 201 is never repeated: the id travels in the outcome
  even when the import after it has to be retried, and a 201 whose id cannot be
  read is `failed`, not retried, because a retry would create a second profile.

Creates go one at a time: Ocamba's steady limit (150/min, 2.5/s) is below what
one connection achieves anyway, and sequential calls keep "which items were
not attempted" exact when a call fails transiently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Literal

import msgspec

from gateway.backends.base import (
    Item,
    NotSent,
    Outcome,
    PermanentError,
    Sender,
    TransientError,
    lane_of,
)
from gateway.config import Settings
from gateway.mapping.model import OcambaMapping
from gateway.mapping.values import WIRE_TYPE, ValueProblem, as_text, restrict
from gateway.mapping.values import custom_properties as mapped_properties
from gateway.schema import Backend, NormalizedProfile

log = logging.getLogger("gateway.backends.ocamba")

CREATE_PATH: Final = "/v1/hood/profiles"
IMPORT_PATH: Final = "/v1/hood/profiles/import"
MAX_CUSTOM_PROPERTIES: Final = 100  # seeds/000: per profile

NEEDS_CONTACT: Final = "Ocamba needs an email or a mobile phone number to create a profile"
CANNOT_UPDATE: Final = (
    "Ocamba cannot update the email, phone or name of a profile it knows"
    " (its API creates profiles and imports custom properties only)"
)
# How `fields` names a custom property; the create fields keep their own names.
PROPERTY: Final = "custom_properties."

# 400 on an import may be about one profile of the chunk (an id Ocamba deleted);
# these are split to find it rather than failing the innocent ones with it,
# within a budget of extra calls, as a 400 about the request as a whole would
# otherwise cost two calls per profile of Ocamba's scarce quota.
_SPLIT_ON: Final = frozenset({400, 422})
_SPLIT_BUDGET: Final = 16


class _OutOfTime(Exception):
    pass


class _Created(msgspec.Struct):
    id: str | int


def create_body(profile: NormalizedProfile) -> dict[str, str]:
    """The create request, with only the fields seeds/001 documents."""
    body: dict[str, str] = {}
    if profile.email:
        body["email"] = profile.email
    if profile.phone:
        body["mobile_phone_number"] = profile.phone
    full_name = profile.full_name or " ".join(
        part for part in (profile.first_name, profile.last_name) if part
    )
    if full_name:
        body["full_name"] = full_name
    return body


def custom_properties(
    profile: NormalizedProfile, mapping: OcambaMapping
) -> dict[str, dict[str, Any]]:
    """Raises `ValueProblem` when the mapping cannot apply to this profile."""
    return {
        prop.name: {"type": WIRE_TYPE, "value": as_text(prop.value)}
        for prop in mapped_properties(profile, mapping.fields, mapping.attribute_types)
    }


def mapped_profile(profile: NormalizedProfile, mapping: OcambaMapping) -> NormalizedProfile:
    """The profile as far as Ocamba may see it (the mapping's exclusions)."""
    return restrict(profile, mapping.exclude, mapping.unmapped_attributes, mapping.fields)


def import_body(
    entries: Sequence[tuple[str, NormalizedProfile]],
    mapping: OcambaMapping,
    only: Sequence[frozenset[str] | None] | None = None,
) -> dict[str, Any]:
    """The import request for (Ocamba id, profile) pairs, in write order;
    `only`, per entry, the properties to send (None: all of them).

    Ocamba refuses an id twice in one request; two writes of one profile in a
    batch become one entry, the later write's values winning, as they would
    had they been sent one after the other."""
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    for index, (backend_id, profile) in enumerate(entries):
        properties = custom_properties(profile, mapping)
        names = only[index] if only is not None else None
        if names is not None:
            properties = {n: p for n, p in properties.items() if n in names}
        merged.setdefault(backend_id, {}).update(properties)
    return {
        "profiles": [
            {"id": backend_id, "custom_properties": properties}
            for backend_id, properties in merged.items()
        ]
    }


def unsendable(profile: NormalizedProfile, mapping: OcambaMapping, *, known: bool) -> str | None:
    """Why this profile can never be delivered as it is, or None. `known`:
    Ocamba has an id for it already, so nothing needs creating."""
    try:
        count = len(custom_properties(profile, mapping))
    except ValueProblem as exc:
        return f"ocamba: {exc}"
    if count > MAX_CUSTOM_PROPERTIES:
        return (
            f"Ocamba accepts at most {MAX_CUSTOM_PROPERTIES} custom properties per profile;"
            f" this profile has {count}"
        )
    if not known and not (profile.email or profile.phone):
        return NEEDS_CONTACT
    return None


def fields(profile: NormalizedProfile, mapping: OcambaMapping) -> dict[str, Any]:
    """What Ocamba gets of a mapped profile, per field: the create fields (only
    a create applies them) and each custom property."""
    found: dict[str, Any] = dict(create_body(profile))
    for name, prop in custom_properties(profile, mapping).items():
        found[PROPERTY + name] = prop["value"]
    return found


class OcambaAdapter:
    name: Backend = "ocamba"

    def __init__(
        self,
        settings: Settings,
        sender: Sender,
        *,
        mapping: OcambaMapping | None = None,
        time_budget: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`time_budget`: seconds after which `deliver` starts no new call and
        hands the rest back as `retry`, so that pacing a large batch under
        Ocamba's limits cannot outlast the dispatcher's lease on it (another
        worker would then create the same profiles again). None: no budget."""
        self.batch_size = max(1, settings.ocamba_import_batch_size)
        self.sender = sender
        self.mapping = mapping or OcambaMapping()
        self.time_budget = time_budget
        self.clock = clock
        self.resend = self.mapping.resend

    def fields(self, item: Item) -> dict[str, Any]:
        return fields(mapped_profile(item.profile, self.mapping), self.mapping)

    async def deliver(self, items: Sequence[Item]) -> list[Outcome]:
        return await _Delivery(self, items).run()


class _Delivery:
    """One `deliver` call: what is done so far, so a failure can hand back the rest."""

    def __init__(self, adapter: OcambaAdapter, given: Sequence[Item]) -> None:
        self.adapter = adapter
        items = [
            msgspec.structs.replace(i, profile=mapped_profile(i.profile, adapter.mapping))
            for i in given
        ]
        self.items = items
        self.done: dict[int, Outcome] = {}
        self.ids: dict[int, str] = {i.delivery_id: i.backend_id for i in items if i.backend_id}
        # external_id -> Ocamba id, so a second write of a profile created earlier
        # in this same batch updates it instead of creating it again.
        self.known: dict[str, str] = {
            i.profile.external_id: i.backend_id for i in items if i.backend_id
        }
        budget = adapter.time_budget
        self.deadline = None if budget is None else adapter.clock() + budget
        self.calls = 0
        self.split_budget = _SPLIT_BUDGET
        self.current: set[int] = set()  # delivery ids of the call under way
        # delivery id -> the custom properties its import carries (None: all).
        self.only: dict[int, frozenset[str] | None] = {}
        # delivery id -> fields of an imported item Ocamba does not take.
        self.not_applied: dict[int, frozenset[str]] = {}

    async def run(self) -> list[Outcome]:
        # Real-time writes first, creates and import: a create is a call of its
        # own, and a batch's bulk creates can take most of a minute's budget
        # (and of this delivery's time budget) under Ocamba's limits.
        realtime = [i for i in self.items if i.lane == "realtime"]
        bulk = [i for i in self.items if i.lane != "realtime"]
        try:
            for group in (realtime, bulk):
                to_import = await self._create_all(group)
                for chunk in _chunks(to_import, self.adapter.batch_size):
                    await self._import(chunk)
        except NotSent as exc:
            return self._rest_retry(str(exc), exc.retry_after, sent=set())
        except TransientError as exc:
            return self._rest_retry(
                str(exc), exc.retry_after, sent=self.current, unavailable=exc.unavailable
            )
        except _OutOfTime:
            budget = self.adapter.time_budget
            return self._rest_retry(
                f"ocamba: not sent yet: this batch used its {budget:g} s time budget"
                " (pacing for Ocamba's rate limits)",
                None,
                sent=set(),
            )
        # Every item has its outcome by now; the fallback only guards a bug.
        return self._rest_retry(
            "ocamba: no outcome was recorded for this delivery", None, sent=self.current
        )

    async def _create_all(self, items: Sequence[Item]) -> list[Item]:
        """Creates what Ocamba does not know yet; returns the items to import."""
        to_import: list[Item] = []
        for item in items:
            delivery_id = item.delivery_id
            external_id = item.profile.external_id
            if delivery_id not in self.ids and external_id in self.known:
                self.ids[delivery_id] = self.known[external_id]
            reason = unsendable(item.profile, self.adapter.mapping, known=delivery_id in self.ids)
            if reason is not None:
                self.done[delivery_id] = Outcome(
                    delivery_id, "failed", reason, backend_id=self.ids.get(delivery_id)
                )
                continue
            kept: frozenset[str] = frozenset()
            if delivery_id not in self.ids:
                try:
                    self.ids[delivery_id] = await self._create(item)
                except PermanentError as exc:
                    self.done[delivery_id] = Outcome(delivery_id, "failed", str(exc))
                    continue
                self.known[external_id] = self.ids[delivery_id]
                properties = self._changed_properties(item, created=True)
            else:
                properties = self._changed_properties(item, created=False)
                # The create fields a known profile carries: Ocamba keeps the old ones.
                kept = frozenset(create_body(item.profile))
                if item.changed is not None:
                    kept &= item.changed
                if not properties and kept:
                    self.done[delivery_id] = Outcome(
                        delivery_id,
                        "unsupported",
                        f"{CANNOT_UPDATE}; not sent: {', '.join(sorted(kept))}",
                        backend_id=self.ids[delivery_id],
                    )
                    continue
            if properties:
                to_import.append(item)
                self.not_applied[delivery_id] = kept
            else:
                # Created just now (201 is synchronous), or known and nothing
                # Ocamba's import could take: done either way.
                self.done[delivery_id] = Outcome(
                    delivery_id, "confirmed", backend_id=self.ids[delivery_id]
                )
        return to_import

    def _changed_properties(self, item: Item, *, created: bool) -> frozenset[str]:
        """The custom properties this item's import carries: all of them for a
        profile created just now or when what changed is unknown, else only
        the changed ones."""
        names = frozenset(custom_properties(item.profile, self.adapter.mapping))
        if created or item.changed is None:
            self.only[item.delivery_id] = None
            return names
        names = frozenset(n for n in names if PROPERTY + n in item.changed)
        self.only[item.delivery_id] = names
        return names

    async def _create(self, item: Item) -> str:
        self._before_call()
        self.current = {item.delivery_id}
        response = await self.adapter.sender.post(
            "create", CREATE_PATH, json=create_body(item.profile), lane=item.lane
        )
        try:
            created = msgspec.json.decode(response.content, type=_Created)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise PermanentError(
                f"ocamba create: HTTP {response.status_code} without a readable profile id;"
                " not retried, as a retry would create the profile twice",
                status=response.status_code,
            ) from None
        backend_id = str(created.id)
        log.info(
            "ocamba profile created",
            extra={"delivery_id": item.delivery_id, "backend_id": backend_id},
        )
        return backend_id

    async def _import(self, chunk: Sequence[Item]) -> None:
        self._before_call()
        self.current = {i.delivery_id for i in chunk}
        body = import_body(
            [(self.ids[i.delivery_id], i.profile) for i in chunk],
            self.adapter.mapping,
            [self.only.get(i.delivery_id) for i in chunk],
        )
        try:
            await self.adapter.sender.post("import", IMPORT_PATH, json=body, lane=lane_of(chunk))
        except PermanentError as exc:
            if exc.status in _SPLIT_ON and len(chunk) > 1 and self.split_budget >= 2:
                self.split_budget -= 2
                middle = len(chunk) // 2
                await self._import(chunk[:middle])
                await self._import(chunk[middle:])
                return
            for item in chunk:
                self._finish(item, "failed", str(exc))
            return
        for item in chunk:
            # 202 means queued; Ocamba reports nothing later, so this is final.
            self._finish(item, "accepted", None)

    def _finish(self, item: Item, state: Literal["accepted", "failed"], error: str | None) -> None:
        delivery_id = item.delivery_id
        self.done[delivery_id] = Outcome(
            delivery_id,
            state,
            error,
            backend_id=self.ids[delivery_id],
            not_applied=self.not_applied.get(delivery_id, frozenset()),
        )

    def _before_call(self) -> None:
        # The first call always goes out, so a tiny budget still makes progress.
        if self.calls and self.deadline is not None and self.adapter.clock() > self.deadline:
            raise _OutOfTime
        self.calls += 1

    def _rest_retry(
        self, error: str, retry_after: float | None, *, sent: set[int], unavailable: bool = False
    ) -> list[Outcome]:
        """Outcomes so far, and `retry` for the rest; only the items of the call
        that failed count the try as an attempt (`sent`)."""
        return [
            self.done.get(item.delivery_id)
            or Outcome(
                item.delivery_id,
                "retry",
                error,
                # Kept on retry: the next attempt must import, not create again.
                backend_id=self.ids.get(item.delivery_id),
                retry_after=retry_after,
                sent=item.delivery_id in sent,
                unavailable=unavailable,
            )
            for item in self.items
        ]


def _chunks(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
