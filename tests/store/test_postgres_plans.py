"""The claim's query plan stays an index walk per lane with a probe per
candidate, also right after a burst of writes, before PostgreSQL has statistics
for them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from gateway.schema import Lane, NormalizedProfile
from gateway.store import queries
from gateway.store.base import NewRequest
from gateway.store.postgres import PostgresStore
from tests.store import pg

pytestmark = pytest.mark.anyio


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
async def test_a_claim_walks_the_due_index_and_probes_each_candidate(plan_cache_mode: str) -> None:
    # A fresh database: no statistics yet, the case in which the planner once
    # estimated one row and scanned the whole open queue per candidate.
    with pg.fresh_database("gateway_plan") as url:
        store = PostgresStore(url)
        await store.open()
        try:
            for r in range(3):
                people = [NormalizedProfile(f"p{r}-{i}") for i in range(1000)]
                lane: Lane = "bulk" if r == 1 else "realtime"
                request = NewRequest(f"r{r}", "crm", ["omneo"], people, time.time(), lane=lane)
                await store.accept(request)
            # The deliveries a claim reads exist (expand made them, as the
            # claim's first step does), still without statistics. With none at
            # all, an empty table, any plan costs nothing and the planner may
            # hash the few picked rows against a scan of it.
            while await store.expand():
                pass
        finally:
            await store.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
            now = time.time()
            args = ("omneo", now, 500, "w", 60.0, "realtime", "bulk", now - 2.0)
            explained = await conn.fetchval(
                "EXPLAIN (FORMAT JSON) " + queries.get("postgres", "claim"), *args
            )
        finally:
            await conn.close()
    plan = list(nodes(json.loads(explained)[0]["Plan"]))
    walks = [n.get("Index Name") for n in plan if n.get("Parent Relationship") != "SubPlan"]
    # One walk of the due index per lane, both in due order, each stopping at the limit.
    due = [n for n in plan if n.get("Index Name") == "deliveries_due_lane"]
    assert len(due) == 2
    for walk in due:
        assert "lane = " in walk["Index Cond"] and "next_attempt_at <= " in walk["Index Cond"]
        assert walk["Scan Direction"] == "Forward"
    assert "deliveries_due_at" not in walks  # dropped by 0013
    assert {"deliveries_due_lane", "deliveries_lease", "deliveries_pkey"} <= set(walks)
    probes = [n for n in plan if n.get("Index Name") == "deliveries_open_person"]
    assert len(probes) == 3  # one per branch
    for probe in probes:
        assert probe["Parent Relationship"] == "SubPlan"
        assert "external_id = c" in probe["Index Cond"] and "id < c" in probe["Index Cond"]
    assert not [n for n in plan if n.get("Node Type") == "Seq Scan"]
    assert not [n for n in plan if n.get("Join Type") == "Anti"]
