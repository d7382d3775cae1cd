"""Webhook events on SQLite: store first, apply after, once each."""

from __future__ import annotations

import sqlite3
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
from gateway.store.sqlite.queue import set_backend_id


def save_webhook(
    conn: sqlite3.Connection, ev: WebhookEvent, sealer: Sealer = PLAINTEXT
) -> SavedEvent:
    # Omneo's body is the whole profile: sealed like a write's.
    body, key_id = sealer.seal(ev.body, event_aad(ev.source, ev.event, ev.body_hash))
    row = conn.execute(
        "INSERT INTO webhook_events (source, event, body_hash, dedup_key, body, key_id,"
        " backend_id, match_key, event_time, received_at, state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        # Either unique index (the body under any event name) makes it a duplicate.
        " ON CONFLICT DO NOTHING RETURNING id",
        (
            ev.source,
            ev.event,
            ev.body_hash,
            ev.body_hash,
            body,
            key_id,
            ev.backend_id,
            event_tags(sealer, ev.match_key),
            ev.event_time,
            ev.received_at,
            "invalid" if ev.invalid else "received",
        ),
    ).fetchone()
    if row is not None:
        return SavedEvent(event_id=row[0], duplicate=False)
    # An event stored under both names before migration 0006 has a NULL key: found
    # by its hash and name then.
    (existing,) = conn.execute(
        "SELECT id FROM webhook_events WHERE source = ? AND (dedup_key = ?"
        " OR (event = ? AND body_hash = ?)) ORDER BY id LIMIT 1",
        (ev.source, ev.body_hash, ev.event, ev.body_hash),
    ).fetchone()
    return SavedEvent(event_id=existing, duplicate=True)


def _is_stale(
    conn: sqlite3.Connection, source: str, backend_id: str | None, event_time: float | None
) -> bool:
    if backend_id is None or event_time is None:
        return False
    newer = conn.execute(
        "SELECT 1 FROM webhook_events WHERE source = ? AND backend_id = ? AND event_time > ?"
        " AND state IN ('applied', 'unmatched') LIMIT 1",
        (source, backend_id, event_time),
    ).fetchone()
    return newer is not None


def _awaits_a_call(conn: sqlite3.Connection, source: str, received_at: float, now: float) -> bool:
    """A delivery claimed before the event arrived is still in flight: the event
    may be Omneo's report of that very call, whose answer the dispatcher has
    not recorded yet (its webhook can overtake the record on a busy machine).
    Only a live lease counts, so an event waits one batch's round trip at most."""
    row = conn.execute(
        "SELECT 1 FROM deliveries INDEXED BY deliveries_lease WHERE backend = ?"
        " AND state = 'in_flight' AND lease_expires_at > ? AND updated_at < ? LIMIT 1",
        (source, now, received_at),
    ).fetchone()
    return row is not None


def apply_webhooks(conn: sqlite3.Connection, source: Backend, limit: int) -> list[AppliedEvent]:
    now = time.time()
    events = conn.execute(
        "SELECT id, event, backend_id, match_key, event_time, received_at FROM webhook_events"
        " WHERE source = ? AND state = 'received' ORDER BY id LIMIT ?",
        (source, limit),
    ).fetchall()
    applied = []
    for event_id, event, backend_id, match_key, event_time, received_at in events:
        confirmations: list[Confirmation] = []
        result: WebhookResult
        if _is_stale(conn, source, backend_id, event_time):
            result = "stale"
        elif match_key is None:
            result = "unmatched"
        else:
            tags = split_tags(match_key)
            marks = ", ".join("?" * len(tags))
            rows = conn.execute(
                "UPDATE deliveries SET state = 'confirmed', confirmed_at = ?, updated_at = ?,"
                f" last_error = NULL WHERE backend = ? AND match_key IN ({marks})"
                f" AND state IN {AWAITING_SQL}"
                # Strictly before: a delivery accepted at the very time the event
                # arrived cannot have been what Omneo reported.
                " AND accepted_at < ? RETURNING id, external_id, accepted_at",
                (now, now, source, *tags, received_at),
            ).fetchall()
            if not rows and _awaits_a_call(conn, source, received_at, now):
                continue  # left `received`: applied again once that call is recorded
            confirmations = sorted(
                (Confirmation(r[0], r[1], max(0.0, received_at - r[2])) for r in rows),
                key=lambda c: c.delivery_id,
            )
            result = "applied" if confirmations else "unmatched"
            if backend_id is not None:
                for external_id in {c.external_id for c in confirmations}:
                    set_backend_id(conn, external_id, source, backend_id, now)
        conn.execute(
            "UPDATE webhook_events SET state = ?, confirmed = ?, applied_at = ? WHERE id = ?",
            (result, len(confirmations), now, event_id),
        )
        applied.append(AppliedEvent(event_id, event, result, confirmations))
    return applied


def mark_unconfirmed(conn: sqlite3.Connection, backend: Backend, accepted_before: float) -> int:
    cur = conn.execute(
        "UPDATE deliveries SET state = 'unconfirmed', updated_at = ?,"
        " last_error = 'no webhook confirmed it in time'"
        " WHERE backend = ? AND state = 'accepted' AND accepted_at < ?",
        (time.time(), backend, accepted_before),
    )
    return cur.rowcount


def count_state(conn: sqlite3.Connection, backend: Backend, state: DeliveryState) -> int:
    (n,) = conn.execute(
        f"SELECT COUNT(*) FROM deliveries WHERE backend = ? AND {state_is('state', [state])}",
        (backend,),
    ).fetchone()
    return int(n)
