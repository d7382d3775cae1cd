-- Webhook events (gateway/store/ops/webhooks.py).

-- name: save_webhook
-- Either unique index (the body under any event name) makes it a duplicate.
INSERT INTO webhook_events (source, event, body_hash, dedup_key, body, backend_id, match_key,
                            event_time, received_at, state, key_id)
VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT DO NOTHING
RETURNING id

-- name: webhook_duplicate_of
-- An event stored under both names before migration 0006 has a NULL key:
-- found by its hash and name then.
SELECT id FROM webhook_events
WHERE source = ?1 AND (dedup_key = ?3 OR (event = ?2 AND body_hash = ?3))
ORDER BY id LIMIT 1

-- name: webhooks_to_apply
SELECT id, event, backend_id, match_key, event_time, received_at FROM webhook_events
WHERE source = ?1 AND state = 'received' ORDER BY id LIMIT ?2

-- name: webhook_is_stale
SELECT EXISTS (
    SELECT 1 FROM webhook_events
    WHERE source = ?1 AND backend_id = ?2 AND event_time > ?3
      AND state IN ('applied', 'unmatched'))

-- name: confirm_deliveries
UPDATE deliveries SET state = 'confirmed', confirmed_at = ?1, updated_at = ?1, last_error = NULL
WHERE backend = ?2 AND match_key IN (SELECT value FROM json_each(?3))
  AND state IN ('accepted', 'unconfirmed') -- lifecycle.AWAITING
  AND accepted_at < ?4  -- strictly before: an equal time cannot be what Omneo reported
RETURNING id, external_id, accepted_at,
    -- For the confirmation's span (README "Tracing"): the trace of the write.
    (SELECT r.traceparent FROM profile_writes w JOIN requests r ON r.id = w.request_id
     WHERE w.id = deliveries.write_id)

-- name: call_in_flight
SELECT EXISTS (
    SELECT 1 FROM deliveries INDEXED BY deliveries_lease
    WHERE backend = ?1 AND state = 'in_flight' AND lease_expires_at > ?2 AND updated_at < ?3)

-- name: set_backend_ids
-- WHERE true: SQLite's parser needs it between a SELECT and ON CONFLICT.
INSERT INTO backend_ids (external_id, backend, backend_id, updated_at)
SELECT value, ?2, ?3, ?4 FROM json_each(?1) WHERE true
ON CONFLICT (external_id, backend) DO UPDATE
SET backend_id = excluded.backend_id, updated_at = excluded.updated_at

-- name: webhook_applied
UPDATE webhook_events SET state = ?1, confirmed = ?2, applied_at = ?3 WHERE id = ?4

-- name: mark_unconfirmed
UPDATE deliveries SET state = 'unconfirmed', updated_at = ?1,
    last_error = 'no webhook confirmed it in time'
WHERE backend = ?2 AND state = 'accepted' AND accepted_at < ?3
