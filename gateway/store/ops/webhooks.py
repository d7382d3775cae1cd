"""Webhook events: store first, apply after, once each."""

from __future__ import annotations

from gateway.crypto import Sealer
from gateway.schema import Backend
from gateway.store.base import (
    AppliedEvent,
    Confirmation,
    SavedEvent,
    WebhookEvent,
    WebhookResult,
)
from gateway.store.pii import event_aad, event_tags, split_tags
from gateway.store.plans import Execute, Fetch, FetchValue, Lock, Plan, lock_key


def save_webhook(ev: WebhookEvent, sealer: Sealer) -> Plan[SavedEvent]:
    # Omneo's body is the whole profile: sealed like a write's.
    body, key_id = sealer.seal(ev.body, event_aad(ev.source, ev.event, ev.body_hash))
    event_id = yield FetchValue(
        "save_webhook",
        (
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
        ),
    )
    if event_id is not None:
        return SavedEvent(event_id=event_id, duplicate=False)
    # A statement of its own: on PostgreSQL, when the copy that won was
    # committed while our insert waited for it, only a new snapshot sees it.
    existing = yield FetchValue("webhook_duplicate_of", (ev.source, ev.event, ev.body_hash))
    return SavedEvent(event_id=existing, duplicate=True)


def apply_webhooks(source: Backend, limit: int, now: float) -> Plan[list[AppliedEvent]]:
    """In one transaction. Every PostgreSQL replica runs an applier: applying
    is serialised per source (the lock ends with the transaction), since the
    staleness of an event depends on the events applied before it, and two
    appliers side by side would each miss the other's uncommitted work (and
    could apply one event twice). The SELECT after it, a later statement, sees
    everything committed by the applier that held it before. SQLite's one
    writer already serialises."""
    yield Lock("lock_webhook_applier", (lock_key(f"apply:{source}"),))
    events = yield Fetch("webhooks_to_apply", (source, limit))
    applied = []
    for event_id, event, backend_id, match_key, event_time, received_at in events:
        confirmations: list[Confirmation] = []
        result: WebhookResult
        if (
            backend_id is not None
            and event_time is not None
            and (yield FetchValue("webhook_is_stale", (source, backend_id, event_time)))
        ):
            result = "stale"
        elif match_key is None:
            result = "unmatched"
        else:
            rows = yield Fetch(
                "confirm_deliveries", (now, source, split_tags(match_key), received_at)
            )
            # A delivery claimed before the event arrived and still in flight:
            # the event may be Omneo's report of that very call, whose answer
            # the dispatcher has not recorded yet (its webhook can overtake the
            # record on a busy machine). Only a live lease counts, so an event
            # waits one batch's round trip at most.
            if not rows and (yield FetchValue("call_in_flight", (source, now, received_at))):
                continue  # left `received`: applied again once that call is recorded
            confirmations = sorted(
                (Confirmation(r[0], r[1], max(0.0, received_at - r[2]), r[3]) for r in rows),
                key=lambda c: c.delivery_id,
            )
            result = "applied" if confirmations else "unmatched"
            if backend_id is not None and confirmations:
                people = sorted({c.external_id for c in confirmations})
                yield Execute("set_backend_ids", (people, source, backend_id, now))
        yield Execute("webhook_applied", (result, len(confirmations), now, event_id))
        applied.append(AppliedEvent(event_id, event, result, confirmations))
    return applied


def mark_unconfirmed(backend: Backend, accepted_before: float, now: float) -> Plan[int]:
    changed = yield Execute("mark_unconfirmed", (now, backend, accepted_before))
    return int(changed)
