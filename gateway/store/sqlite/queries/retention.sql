-- Retention purge (gateway/store/ops/retention.py). SQLite's one writer: no
-- lock_purge_deliveries.

-- name: purge_candidates
SELECT id FROM profile_writes
WHERE id > ?1 AND id <= ?1 + ?2 AND removed IS NULL AND received_at < ?3
  -- Not expanded yet: not delivered yet either (expand makes no deliveries
  -- for a removed write, so it must not be removed first).
  AND request_id NOT IN (SELECT request_id FROM expand_queue)

-- name: purge_writes
UPDATE profile_writes SET body = ?2, key_id = NULL, removed = 'purged', removed_at = ?3
WHERE id IN (SELECT value FROM json_each(?1)) AND removed IS NULL
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.write_id = profile_writes.id
                  AND (d.state IN ('pending', 'retrying', 'in_flight') -- lifecycle.OPEN
                       OR d.updated_at >= ?4))
  -- A merged write is delivered inside its carrier: kept while that one is.
  AND NOT EXISTS (SELECT 1 FROM deliveries d JOIN deliveries c ON c.id = d.merged_into
                  WHERE d.write_id = profile_writes.id
                  AND (c.state IN ('pending', 'retrying', 'in_flight') -- lifecycle.OPEN
                       OR c.updated_at >= ?4))
RETURNING id

-- name: purge_delivery_tags
UPDATE deliveries SET match_key = NULL,
    last_error = CASE WHEN last_error IS NULL THEN NULL ELSE ?2 END
WHERE write_id IN (SELECT value FROM json_each(?1))

-- name: write_received_after
SELECT received_at FROM profile_writes WHERE id > ?1 ORDER BY id LIMIT 1

-- name: purge_events
UPDATE webhook_events SET body = ?1, key_id = NULL, match_key = NULL, removed_at = ?2
WHERE id > ?3 AND id <= ?3 + ?4 AND removed_at IS NULL AND state != 'received'
  AND received_at < ?5

-- name: event_received_after
SELECT received_at FROM webhook_events WHERE id > ?1 ORDER BY id LIMIT 1

-- name: purge_idempotency_keys
DELETE FROM idempotency_keys WHERE rowid IN
    (SELECT rowid FROM idempotency_keys WHERE created_at < ?1 LIMIT ?2)
