"""Webhook events on PostgreSQL: store first, apply after, once each."""

from __future__ import annotations

import time

from gateway.crypto import PLAINTEXT, Sealer
from gateway.lifecycle import AWAITING_SQL, state_is
from gateway.schema import Backend
from gateway.store.base import (
    AppliedEvent,
    Confirmation,
    DeliveryState,
    SavedEvent,
    WebhookEvent,
    WebhookResult,
)
from gateway.store.pii import event_aad, event_tags, split_tags
from gateway.store.postgres.db import Conn, advisory_key

_SAVE = """
INSERT INTO webhook_events (source, event, body_hash, dedup_key, body, backend_id, match_key,
                            event_time, received_at, state, key_id)
VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (source, dedup_key) DO NOTHING
RETURNING id
"""


async def save_webhook(conn: Conn, ev: WebhookEvent, sealer: Sealer = PLAINTEXT) -> SavedEvent:
    # Omneo's body is the whole profile: sealed like a write's.
    body, key_id = sealer.seal(ev.body, event_aad(ev.source, ev.event, ev.body_hash))
    event_id = await conn.fetchval(
        _SAVE,
        ev.source,
        ev.event,
        ev.body_hash,
        body,
        ev.backend_id,
        event_tags(sealer, ev.match_key),
        ev.event_time,
        ev.received_at,
        "invalid" if ev.invalid else "received",
        key_id,
    )
    if event_id is not None:
        return SavedEvent(event_id=event_id, duplicate=False)
    # A statement of its own: when the copy that won was committed while our
    # insert waited for it, only a new snapshot sees it.
    # An event stored under both names before migration 0005 has a NULL key:
    # found by its hash and name then.
    existing = await conn.fetchval(
        "SELECT id FROM webhook_events WHERE source = $1 AND (dedup_key = $3"
        " OR (event = $2 AND body_hash = $3)) ORDER BY id LIMIT 1",
        ev.source,
        ev.event,
        ev.body_hash,
    )
    return SavedEvent(event_id=existing, duplicate=True)


_STALE = """
SELECT EXISTS (
    SELECT 1 FROM webhook_events
    WHERE source = $1 AND backend_id = $2 AND event_time > $3
      AND state IN ('applied', 'unmatched'))
"""
_CONFIRM = f"""
UPDATE deliveries SET state = 'confirmed', confirmed_at = $1, updated_at = $1, last_error = NULL
WHERE backend = $2 AND match_key = ANY($3::text[]) AND state IN {AWAITING_SQL}
  AND accepted_at < $4  -- strictly before: an equal time cannot be what Omneo reported
RETURNING id, external_id, accepted_at
"""
# A delivery claimed before the event arrived and still in flight: the event
# may be Omneo's report of that very call, whose answer the dispatcher has not
# recorded yet (its webhook can overtake the record on a busy machine). Only a
# live lease counts, so an event waits one batch's round trip at most.
_IN_FLIGHT = """
SELECT EXISTS (
    SELECT 1 FROM deliveries
    WHERE backend = $1 AND state = 'in_flight' AND lease_expires_at > $2 AND updated_at < $3)
"""
_SET_IDS = """
INSERT INTO backend_ids (external_id, backend, backend_id, updated_at)
SELECT e.external_id, $2, $3, $4 FROM unnest($1::text[]) AS e(external_id)
ORDER BY e.external_id
ON CONFLICT (external_id, backend) DO UPDATE
SET backend_id = EXCLUDED.backend_id, updated_at = EXCLUDED.updated_at
"""


async def apply_webhooks(conn: Conn, source: Backend, limit: int) -> list[AppliedEvent]:
    """Runs in the caller's transaction."""
    # Every replica runs an applier. Applying is serialised per source: the
    # staleness of an event depends on the events applied before it, and two
    # appliers working side by side would each miss the other's uncommitted
    # work (and could apply one event twice). The lock ends with the
    # transaction; the SELECT below, a later statement, sees everything
    # committed by the applier that held it before.
    await conn.execute("SELECT pg_advisory_xact_lock($1)", advisory_key(f"apply:{source}"))
    now = time.time()
    events = await conn.fetch(
        "SELECT id, event, backend_id, match_key, event_time, received_at FROM webhook_events"
        " WHERE source = $1 AND state = 'received' ORDER BY id LIMIT $2",
        source,
        limit,
    )
    applied = []
    for ev in events:
        confirmations: list[Confirmation] = []
        result: WebhookResult
        backend_id, match_key, received_at = ev["backend_id"], ev["match_key"], ev["received_at"]
        if (
            backend_id is not None
            and ev["event_time"] is not None
            and await conn.fetchval(_STALE, source, backend_id, ev["event_time"])
        ):
            result = "stale"
        elif match_key is None:
            result = "unmatched"
        else:
            rows = await conn.fetch(_CONFIRM, now, source, split_tags(match_key), received_at)
            if not rows and await conn.fetchval(_IN_FLIGHT, source, now, received_at):
                continue  # left `received`: applied again once that call is recorded
            confirmations = sorted(
                (
                    Confirmation(
                        r["id"], r["external_id"], max(0.0, received_at - r["accepted_at"])
                    )
                    for r in rows
                ),
                key=lambda c: c.delivery_id,
            )
            result = "applied" if confirmations else "unmatched"
            if backend_id is not None and confirmations:
                people = sorted({c.external_id for c in confirmations})
                await conn.execute(_SET_IDS, people, source, backend_id, now)
        await conn.execute(
            "UPDATE webhook_events SET state = $1, confirmed = $2, applied_at = $3 WHERE id = $4",
            result,
            len(confirmations),
            now,
            ev["id"],
        )
        applied.append(AppliedEvent(ev["id"], ev["event"], result, confirmations))
    return applied


async def mark_unconfirmed(conn: Conn, backend: Backend, accepted_before: float) -> int:
    changed = await conn.fetchval(
        "WITH changed AS ("
        " UPDATE deliveries SET state = 'unconfirmed', updated_at = $1,"
        " last_error = 'no webhook confirmed it in time'"
        " WHERE backend = $2 AND state = 'accepted' AND accepted_at < $3 RETURNING 1)"
        " SELECT count(*) FROM changed",
        time.time(),
        backend,
        accepted_before,
    )
    return int(changed)


async def count_state(conn: Conn, backend: Backend, state: DeliveryState) -> int:
    n = await conn.fetchval(
        f"SELECT count(*) FROM deliveries WHERE backend = $1 AND {state_is('state', [state])}",
        backend,
    )
    return int(n)
