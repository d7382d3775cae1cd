-- The keyring and key rotation (gateway/store/ops/keys.py). The rows a step
-- rewrites are locked by its select; the keyring by an advisory lock.

-- name: lock_keyring
-- Replicas registering or retiring keys together: one at a time.
SELECT pg_advisory_xact_lock($1)

-- name: encryption_keys
SELECT key_id, fingerprint FROM encryption_keys

-- name: plaintext_writes_exist
SELECT EXISTS (SELECT 1 FROM profile_writes WHERE key_id IS NULL AND length(body) > 0)

-- name: plaintext_events_exist
SELECT EXISTS (SELECT 1 FROM webhook_events WHERE key_id IS NULL AND length(body) > 0)

-- name: register_key
INSERT INTO encryption_keys (key_id, fingerprint, added_at) VALUES ($1, $2, $3)

-- name: count_writes_to_reseal
SELECT count(*) FROM profile_writes WHERE length(body) > 0 AND key_id IS DISTINCT FROM $1

-- name: count_events_to_reseal
SELECT count(*) FROM webhook_events WHERE length(body) > 0 AND key_id IS DISTINCT FROM $1

-- name: count_deliveries_to_retag
SELECT count(*) FROM deliveries
WHERE state IN ('accepted', 'unconfirmed') -- lifecycle.AWAITING
  AND match_key IS NOT NULL AND NOT starts_with(match_key, $1)

-- name: count_errors_to_reseal
SELECT count(*) FROM deliveries
WHERE last_error IS NOT NULL AND NOT starts_with(last_error, $1)

-- name: writes_to_reseal
SELECT id, body, request_id, position FROM profile_writes
WHERE id > $1 AND id <= $1 + $2 AND length(body) > 0 AND key_id IS DISTINCT FROM $3
FOR UPDATE

-- name: reseal_write
UPDATE profile_writes SET body = $1, key_id = $2 WHERE id = $3

-- name: events_to_reseal
SELECT id, body, source, event, body_hash, match_key FROM webhook_events
WHERE id > $1 AND id <= $1 + $2 AND length(body) > 0 AND key_id IS DISTINCT FROM $3
FOR UPDATE

-- name: reseal_event
UPDATE webhook_events SET body = $1, key_id = $2, match_key = $3 WHERE id = $4

-- name: errors_to_reseal
SELECT id, last_error FROM deliveries
WHERE id > $1 AND id <= $1 + $2
  AND last_error IS NOT NULL AND NOT starts_with(last_error, $3)
FOR UPDATE

-- name: reseal_error
UPDATE deliveries SET last_error = $1 WHERE id = $2

-- name: deliveries_to_retag
SELECT d.id, w.body, w.request_id, w.position FROM deliveries d
JOIN profile_writes w ON w.id = d.write_id
WHERE d.id > $1 AND d.id <= $1 + $2
  AND d.state IN ('accepted', 'unconfirmed') -- lifecycle.AWAITING
  AND d.match_key IS NOT NULL AND NOT starts_with(d.match_key, $3)
  AND length(w.body) > 0
FOR UPDATE OF d

-- name: retag_delivery
UPDATE deliveries SET match_key = $1 WHERE id = $2

-- name: write_after
SELECT 1 FROM profile_writes WHERE id > $1 LIMIT 1

-- name: event_after
SELECT 1 FROM webhook_events WHERE id > $1 LIMIT 1

-- name: delivery_after
SELECT 1 FROM deliveries WHERE id > $1 LIMIT 1

-- name: key_in_use
SELECT EXISTS (SELECT 1 FROM profile_writes WHERE key_id = $1)
    OR EXISTS (SELECT 1 FROM webhook_events WHERE key_id = $1)
    OR EXISTS (SELECT 1 FROM deliveries WHERE starts_with(last_error, $2))

-- name: retire_key
DELETE FROM encryption_keys WHERE key_id = $1
