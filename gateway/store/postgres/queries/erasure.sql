-- Erasure (gateway/store/ops/erasure.py).

-- name: lock_expand
-- Expand's lock: no replica makes deliveries for the person's queued writes
-- while the erasure runs.
SELECT pg_advisory_xact_lock($1)

-- name: person_writes
-- A person's writes: through their deliveries, or still waiting for expand.
SELECT write_id FROM deliveries WHERE external_id = $1
UNION
SELECT w.id FROM expand_queue q JOIN profile_writes w ON w.request_id = q.request_id
WHERE w.external_id = $1

-- name: person_bodies
SELECT body, request_id, position FROM profile_writes
WHERE id = ANY($1::bigint[]) AND length(body) > 0

-- name: erase_idempotency_keys
DELETE FROM idempotency_keys WHERE request_id IN
    (SELECT request_id FROM profile_writes WHERE id = ANY($1::bigint[]))

-- name: erase_writes
UPDATE profile_writes SET body = $1, key_id = NULL, removed = 'erased', removed_at = $2
WHERE id = ANY($3::bigint[]) AND removed IS DISTINCT FROM 'erased'

-- name: lock_person_deliveries
-- Claims and records of the person's deliveries wait for the erasure; the
-- reads after this see their latest versions.
-- In id order, as a claim that merges locks them (queue.sql claim_merge).
SELECT 1 FROM deliveries WHERE external_id = $1 ORDER BY id FOR UPDATE

-- name: person_open_deliveries
-- (cancelled, in flight)
SELECT count(*) FILTER (WHERE state IN ('pending', 'retrying')), -- lifecycle.DUE
       count(*) FILTER (WHERE state = 'in_flight')
FROM deliveries WHERE external_id = $1

-- name: person_match_keys
SELECT DISTINCT match_key FROM deliveries WHERE external_id = $1 AND match_key IS NOT NULL

-- name: person_delivered_to
SELECT DISTINCT backend FROM deliveries
WHERE external_id = $1 AND accepted_at IS NOT NULL ORDER BY backend

-- name: erase_deliveries
UPDATE deliveries SET
    state = CASE WHEN state IN ('pending', 'retrying', 'in_flight') -- lifecycle.OPEN
        THEN 'erased' ELSE state END,
    last_error = CASE WHEN state IN ('pending', 'retrying', 'in_flight') -- lifecycle.OPEN
        OR last_error IS NOT NULL THEN 'erased on request' END,
    lease_owner = NULL, lease_expires_at = NULL, match_key = NULL, updated_at = $1
WHERE external_id = $2

-- name: erase_sent_fields
DELETE FROM sent_fields WHERE external_id = $1

-- name: omneo_events_of
SELECT id FROM webhook_events WHERE source = 'omneo' AND backend_id = $1 AND removed_at IS NULL

-- name: tagged_events
SELECT id, match_key FROM webhook_events WHERE match_key IS NOT NULL

-- name: erase_events
UPDATE webhook_events SET body = $1, key_id = NULL, match_key = NULL, removed_at = $2
WHERE id = ANY($3::bigint[])
