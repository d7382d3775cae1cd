-- The delivery queue's writes on SQLite: claim, record, replay
-- (gateway/store/sqlite/queue.py). Every claim branch walks a partial index in
-- order and stops at the limit, so a claim costs about `limit` rows (plus any
-- held back by the ordering rule), however long the queue is.

-- name: claim_expired
-- Leases that ran out (their worker died), oldest first; no earlier write of
-- the same person to the same backend may still be open.
SELECT d.id, d.external_id, d.attempts + 1, d.created_at, w.body, b.backend_id,
       w.request_id, w.position, d.lane,
       (SELECT r.resend FROM requests r WHERE r.id = w.request_id),
       (SELECT r.traceparent FROM requests r WHERE r.id = w.request_id)
FROM deliveries d
JOIN profile_writes w ON w.id = d.write_id
LEFT JOIN backend_ids b ON b.external_id = d.external_id AND b.backend = d.backend
WHERE d.id IN (
    SELECT id FROM deliveries INDEXED BY deliveries_lease
    WHERE backend = ?1 AND state = 'in_flight' AND lease_expires_at <= ?2
    ORDER BY lease_expires_at LIMIT ?3)
  AND NOT EXISTS (
    SELECT 1 FROM deliveries e INDEXED BY deliveries_open_person
    WHERE e.backend = d.backend AND e.external_id = d.external_id
      AND e.id < d.id AND e.state IN ('pending', 'retrying', 'in_flight')) -- lifecycle.OPEN

-- name: claim_due
-- Due deliveries of one lane in due order, each only if no earlier write of
-- the same person to the same backend is still open, whatever its lane. Due:
-- their time is ?2 (now) or earlier; a first try's ?5 or earlier (now less
-- the backend's settle: a retry has waited its backoff). The lane leads the
-- index after the backend, so each lane is its own walk.
SELECT d.id, d.external_id, d.attempts + 1, d.created_at, w.body, b.backend_id,
       w.request_id, w.position, d.lane,
       (SELECT r.resend FROM requests r WHERE r.id = w.request_id),
       (SELECT r.traceparent FROM requests r WHERE r.id = w.request_id)
FROM deliveries d
JOIN profile_writes w ON w.id = d.write_id
LEFT JOIN backend_ids b ON b.external_id = d.external_id AND b.backend = d.backend
WHERE d.rowid IN (
    SELECT c.id FROM deliveries c INDEXED BY deliveries_due_lane
    WHERE c.backend = ?1 AND c.lane = ?4 AND c.state IN ('pending', 'retrying') -- lifecycle.DUE
      AND c.next_attempt_at <= ?2
      AND (c.state = 'retrying' OR c.next_attempt_at <= ?5)
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e INDEXED BY deliveries_open_person
          WHERE e.backend = c.backend AND e.external_id = c.external_id
            AND e.id < c.id AND e.state IN ('pending', 'retrying', 'in_flight')) -- lifecycle.OPEN
    ORDER BY c.next_attempt_at LIMIT ?3)

-- name: claim_lease
-- One statement for the whole claim: each statement step hands the GIL back
-- and forth with the event loop (see sqlite/accept.py).
UPDATE deliveries SET state = 'in_flight', lease_owner = ?1, lease_expires_at = ?2,
    attempts = attempts + 1, updated_at = ?3
WHERE id IN (SELECT value FROM json_each(?4))

-- name: claim_merge
-- Merging (gateway/store/merge.py): the later queued writes of each claimed
-- delivery's person to the same backend end `merged`, carried by it. A step
-- of its own after the lease, whatever chose the candidates. Not past a
-- delivery of the person in flight between the two (a replayed older write
-- claimed while a newer one is out): that one could land after the carrier.
-- ?1: the claimed ids as a JSON array. Returns the ids it merged.
WITH pairs(lid, cid) AS (
    SELECT l.id, MAX(c.id)
    FROM json_each(?1) j
    JOIN deliveries c ON c.id = j.value
    JOIN deliveries l ON l.external_id = c.external_id AND l.backend = c.backend
        AND l.id > c.id AND l.state IN ('pending', 'retrying') -- lifecycle.DUE
    WHERE NOT EXISTS (
        SELECT 1 FROM deliveries e
        WHERE e.external_id = c.external_id AND e.backend = c.backend
          AND e.id > c.id AND e.id < l.id AND e.state = 'in_flight')
      AND NOT EXISTS (
          -- `"resend": true` sends a write as it is, by itself: nothing is
          -- merged into it, nor past it (that would land before it).
          SELECT 1 FROM deliveries r
          JOIN profile_writes rw ON rw.id = r.write_id
          JOIN requests rq ON rq.id = rw.request_id
          WHERE r.external_id = c.external_id AND r.backend = c.backend
            AND r.id >= c.id AND r.id <= l.id AND rq.resend
            AND r.state IN ('pending', 'retrying', 'in_flight')) -- lifecycle.OPEN
    GROUP BY l.id)
UPDATE deliveries SET state = 'merged', merged_into = pairs.cid, lease_owner = NULL,
    lease_expires_at = NULL, updated_at = ?2
FROM pairs
WHERE deliveries.id = pairs.lid
RETURNING deliveries.id

-- name: claim_carried
-- The writes each claimed delivery carries, merged now or by an earlier claim
-- of it (a retry, a lease taken over, a replay), in write order.
SELECT m.merged_into, m.id, w.body, w.request_id, w.position,
       (SELECT r.traceparent FROM requests r WHERE r.id = w.request_id),
       (SELECT r.resend FROM requests r WHERE r.id = w.request_id)
FROM json_each(?1) j
JOIN deliveries c ON c.id = j.value
JOIN deliveries m ON m.external_id = c.external_id AND m.backend = c.backend
    AND m.id > c.id AND m.merged_into = c.id
JOIN profile_writes w ON w.id = m.write_id
ORDER BY m.merged_into, m.id

-- name: claim_unsendable
-- A claimed payload that cannot be opened (a key gone from the keyring).
UPDATE deliveries SET state = 'failed', last_error = ?1, lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = ?2

-- name: record
-- A whole batch of outcomes in one UPDATE, the batch as a JSON array of
-- [id, state, error, next, match_key, refund, sent_at]; a lease that expired
-- and passed to another worker is left alone.
WITH r(id, state, error, next, match_key, refund, sent_at) AS (
    SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
           value ->> 6
    FROM json_each(?3))
UPDATE deliveries SET
    state = r.state,
    last_error = r.error,
    updated_at = ?1,
    next_attempt_at = COALESCE(r.next, deliveries.next_attempt_at),
    match_key = COALESCE(r.match_key, deliveries.match_key),
    attempts = deliveries.attempts - r.refund,
    lease_owner = NULL,
    lease_expires_at = NULL,
    -- When the call was sent, not now: a webhook may be stored before this
    -- commits, and is matched by arriving after accepted_at (see the README).
    accepted_at = CASE WHEN r.state IN ('accepted', 'confirmed') -- lifecycle.DELIVERED
        THEN COALESCE(deliveries.accepted_at, r.sent_at, ?1) ELSE deliveries.accepted_at END,
    confirmed_at = CASE WHEN r.state = 'confirmed' THEN ?1 ELSE deliveries.confirmed_at END
FROM r
WHERE deliveries.id = r.id AND deliveries.state = 'in_flight' AND deliveries.lease_owner = ?2
RETURNING deliveries.id, deliveries.external_id, deliveries.backend

-- name: record_backend_ids
-- The ids backends gave, as a JSON array of [external_id, backend, backend_id];
-- a later entry for the same person wins, as a later row would.
INSERT INTO backend_ids (external_id, backend, backend_id, updated_at)
SELECT value ->> 0, value ->> 1, value ->> 2, ?2 FROM json_each(?1) WHERE true
ON CONFLICT (external_id, backend) DO UPDATE
SET backend_id = excluded.backend_id, updated_at = excluded.updated_at

-- name: record_sent_fields
-- What the backend now has of each person, per field, as a JSON array of
-- [external_id, backend, {field: digest}], merged over what it had.
INSERT INTO sent_fields (external_id, backend, digests, updated_at)
SELECT value ->> 0, value ->> 1, value ->> 2, ?2 FROM json_each(?1) WHERE true
ON CONFLICT (external_id, backend) DO UPDATE
SET digests = json_patch(sent_fields.digests, excluded.digests), updated_at = excluded.updated_at

-- name: replay_candidates
-- Deliveries in the asked states (and delivery or backend, when given), each
-- with whether a later write of the person was delivered since (superseded).
-- A delivery whose payload was purged or erased has nothing left to send.
SELECT d.id, EXISTS (
    SELECT 1 FROM deliveries n
    WHERE n.backend = d.backend AND n.external_id = d.external_id AND n.id > d.id
      AND (n.state IN ('accepted', 'confirmed') -- lifecycle.DELIVERED
           -- or carried (merged) by a delivery that was delivered
           OR EXISTS (SELECT 1 FROM deliveries c WHERE c.id = n.merged_into
                      AND c.state IN ('accepted', 'confirmed')))) -- lifecycle.DELIVERED
FROM deliveries d
WHERE d.state {in_states}
  AND (?1 IS NULL OR d.id = ?1) AND (?2 IS NULL OR d.backend = ?2)
  AND EXISTS (SELECT 1 FROM profile_writes w WHERE w.id = d.write_id AND w.removed IS NULL)
  -- Nor does one a write it carries (merged into it) is gone from.
  AND NOT EXISTS (
    SELECT 1 FROM deliveries m JOIN profile_writes mw ON mw.id = m.write_id
    WHERE m.external_id = d.external_id AND m.backend = d.backend AND m.id > d.id
      AND m.merged_into = d.id AND mw.removed IS NOT NULL)

-- name: replay_requeue
UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?1, updated_at = ?1
WHERE id IN (SELECT value FROM json_each(?2))

-- name: replay_forget_sent
-- An operator sends it again: in full, whatever the backend was last said to
-- have (an `unconfirmed` write may never have landed).
DELETE FROM sent_fields
WHERE (external_id, backend) IN (
    SELECT external_id, backend FROM deliveries WHERE id IN (SELECT value FROM json_each(?1)))
