"""The baseline for part 5: what a user would write instead of the gateway.

One httpx call per profile per backend, in each vendor's own API, as the docs
show it: Ocamba a create and then an import of the custom properties (two
calls), Omneo a one-profile batch, import_batch a one-profile import. A fixed
number of profiles in flight, no store, no pacing and no retries: an answer
other than 2xx (a 429 included) loses that profile for that backend.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import msgspec
from sims import ALL_TARGETS, Simulators

from gateway.schema import Backend, NormalizedProfile
from gateway.simulators.runner import (
    DEFAULT_IMPORT_BATCH_DB_ID,
    DEFAULT_IMPORT_BATCH_TOKEN,
    DEFAULT_OCAMBA_TOKEN,
    DEFAULT_OMNEO_TOKEN,
)


class Forwarded(msgspec.Struct, kw_only=True):
    profiles: int
    seconds: float
    calls: dict[str, int]  # backend -> HTTP calls made
    statuses: dict[str, dict[int, int]]  # backend -> status -> calls
    delivered: dict[str, int]  # backend -> profiles that got through

    def too_many(self) -> int:
        return sum(s.get(429, 0) for s in self.statuses.values())


def _ocamba_properties(profile: NormalizedProfile) -> dict[str, Any]:
    return {
        # `string` with a text value: the only custom property type Ocamba documents.
        name: {"type": "string", "value": str(value)}
        for name, value in (profile.attributes or {}).items()
    }


class _Forwarder:
    def __init__(self, sims: Simulators, client: httpx.AsyncClient) -> None:
        self.sims = sims
        self.client = client
        self.statuses: dict[str, Counter[int]] = {b: Counter() for b in ALL_TARGETS}
        self.delivered: Counter[str] = Counter()

    async def _post(
        self, backend: Backend, url: str, body: Any, token: str | None
    ) -> httpx.Response | None:
        """The answer when it is a success, else None (status 0: no answer)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            r = await self.client.post(url, json=body, headers=headers)
        except httpx.HTTPError:
            self.statuses[backend][0] += 1
            return None
        self.statuses[backend][r.status_code] += 1
        return r if r.is_success else None

    async def ocamba(self, p: NormalizedProfile) -> None:
        base = self.sims.ocamba_url
        create = {
            "email": p.email,
            "mobile_phone_number": p.phone,
            "full_name": f"{p.first_name} {p.last_name}",
        }
        created = await self._post(
            "ocamba", f"{base}/v1/hood/profiles", create, DEFAULT_OCAMBA_TOKEN
        )
        if created is None:
            return
        ocamba_id = created.json()["id"]
        body = {"profiles": [{"id": ocamba_id, "custom_properties": _ocamba_properties(p)}]}
        url = f"{base}/v1/hood/profiles/import"
        if await self._post("ocamba", url, body, DEFAULT_OCAMBA_TOKEN) is not None:
            self.delivered["ocamba"] += 1

    async def omneo(self, p: NormalizedProfile) -> None:
        profile = {
            "first_name": p.first_name,
            "last_name": p.last_name,
            "email": p.email,
            "mobile_phone": p.phone,
            "custom_attributes": [
                {"namespace": "app", "handle": name, "type": "string", "value": str(value)}
                for name, value in (p.attributes or {}).items()
            ],
        }
        body = {"match_criteria": "email", "profiles": [profile]}
        url = f"{self.sims.omneo_url}/api/v3/profiles/batch"
        if await self._post("omneo", url, body, DEFAULT_OMNEO_TOKEN) is not None:
            self.delivered["omneo"] += 1

    async def import_batch(self, p: NormalizedProfile) -> None:
        item = {
            "_fname": p.first_name,
            "_lname": p.last_name,
            "email": p.email,
            "phone": p.phone,
            "external_id": p.external_id,
            **(p.attributes or {}),
        }
        body = {
            "token": DEFAULT_IMPORT_BATCH_TOKEN,
            "db_id": DEFAULT_IMPORT_BATCH_DB_ID,
            "matching": "email",
            "data": [item],
        }
        url = f"{self.sims.import_batch_url}/api/v1.1/profiles/import_batch"
        if await self._post("import_batch", url, body, None) is not None:
            self.delivered["import_batch"] += 1


async def _forward(
    sims: Simulators, profiles: list[NormalizedProfile], concurrency: int
) -> Forwarded:
    async with httpx.AsyncClient(timeout=30) as client:
        todo = list(reversed(profiles))

        async def worker() -> None:
            f = _Forwarder(sims, client)
            forwarders.append(f)
            while todo:
                p = todo.pop()
                await f.ocamba(p)
                await f.omneo(p)
                await f.import_batch(p)

        forwarders: list[_Forwarder] = []
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    statuses: dict[str, Counter[int]] = {b: Counter() for b in ALL_TARGETS}
    delivered: Counter[str] = Counter()
    for f in forwarders:
        for b in ALL_TARGETS:
            statuses[b].update(f.statuses[b])
        delivered.update(f.delivered)
    return Forwarded(
        profiles=len(profiles),
        seconds=seconds,
        calls={b: sum(statuses[b].values()) for b in ALL_TARGETS},
        statuses={b: dict(sorted(statuses[b].items())) for b in ALL_TARGETS},
        delivered={b: delivered[b] for b in ALL_TARGETS},
    )


def forward(
    sims: Simulators, profiles: list[NormalizedProfile], *, concurrency: int = 8
) -> Forwarded:
    """Sends every profile to every backend, `concurrency` profiles at a time."""
    return asyncio.run(_forward(sims, profiles, concurrency))
