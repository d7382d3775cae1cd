-- The delivery queue's writes on PostgreSQL: claim, record, replay
-- (gateway/store/postgres/queue.py, which says why a claim never hands one
-- delivery to two workers nor lets a person's later write overtake an earlier).

-- name: claim
-- Expired leases first, whatever their lane: those writes are the oldest.
-- Then the due deliveries of lane $6, then of lane $7 (NULL: none), each lane
-- in due order; due: their time was $2 (now) or earlier, a first try's $8 or
-- earlier ($2 less the backend's settle: a retry has waited its backoff). Each branch walks its partial index (deliveries_lease;
-- deliveries_due_lane, which leads with the lane after the backend) in order
-- and stops at the limit, probing deliveries_open_person per candidate, so a
-- claim costs about `limit` rows however long the queue is. The ordering rule
-- looks at every open delivery of the person, whatever its lane. The branches
-- are read lazily, so a later one locks only as many rows as the ones before
-- left room for.
-- OFFSET 0 keeps the ordering rule a sub-plan run once per candidate, an index
-- probe on (backend, external_id, id) as on SQLite. Without it the planner may
-- turn it into an anti join, and on a table whose statistics lag behind a
-- burst of writes (estimated at one row) it picked an inner scan over the
-- backend's whole open queue per candidate: 1.3 s for a claim of 500 of 8,000.
WITH expired AS (
    SELECT c.id, c.lease_expires_at AS due_at FROM deliveries c
    WHERE c.backend = $1 AND c.state = 'in_flight' AND c.lease_expires_at <= $2
      AND NOT EXISTS (
        SELECT 1 FROM deliveries e
        WHERE e.backend = c.backend AND e.external_id = c.external_id
          AND e.id < c.id AND e.state IN ('pending', 'retrying', 'in_flight') -- lifecycle.OPEN
        OFFSET 0)
    ORDER BY c.lease_expires_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), due_first AS (
    SELECT c.id, c.next_attempt_at AS due_at FROM deliveries c
    WHERE c.backend = $1 AND c.lane = $6::text
      AND c.state IN ('pending', 'retrying') -- lifecycle.DUE
      AND c.next_attempt_at <= $2
      AND (c.state = 'retrying' OR c.next_attempt_at <= $8)
      AND NOT EXISTS (
        SELECT 1 FROM deliveries e
        WHERE e.backend = c.backend AND e.external_id = c.external_id
          AND e.id < c.id AND e.state IN ('pending', 'retrying', 'in_flight') -- lifecycle.OPEN
        OFFSET 0)
    ORDER BY c.next_attempt_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), due_then AS (
    SELECT c.id, c.next_attempt_at AS due_at FROM deliveries c
    WHERE c.backend = $1 AND c.lane = $7::text
      AND c.state IN ('pending', 'retrying') -- lifecycle.DUE
      AND c.next_attempt_at <= $2
      AND (c.state = 'retrying' OR c.next_attempt_at <= $8)
      AND NOT EXISTS (
        SELECT 1 FROM deliveries e
        WHERE e.backend = c.backend AND e.external_id = c.external_id
          AND e.id < c.id AND e.state IN ('pending', 'retrying', 'in_flight') -- lifecycle.OPEN
        OFFSET 0)
    ORDER BY c.next_attempt_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id, 0 AS branch, due_at FROM expired
    UNION ALL
    SELECT id, 1 AS branch, due_at FROM due_first
    UNION ALL
    SELECT id, 2 AS branch, due_at FROM due_then
    LIMIT $3
), claimed AS (
    UPDATE deliveries d
    SET state = 'in_flight', lease_owner = $4, lease_expires_at = $2 + $5,
        attempts = d.attempts + 1, updated_at = $2
    FROM picked p
    WHERE d.id = p.id
    RETURNING d.id, d.external_id, d.backend, d.write_id, d.attempts, d.created_at, d.lane,
              p.branch, p.due_at
)
SELECT c.id, c.external_id, c.attempts, c.created_at, w.body, b.backend_id,
       w.request_id, w.position, c.lane, r.resend, r.traceparent
FROM claimed c
JOIN profile_writes w ON w.id = c.write_id
JOIN requests r ON r.id = w.request_id
LEFT JOIN backend_ids b ON b.external_id = c.external_id AND b.backend = c.backend
ORDER BY c.branch, c.due_at, c.id

-- name: claim_merge
-- Merging (gateway/store/merge.py), a statement of its own after the lease,
-- whatever chose the candidates: the later queued writes of each claimed
-- delivery's person to the same backend end `merged`, carried by it; then
-- every write it carries, merged now or by an earlier claim of it (a retry, a
-- lease taken over, a replay), in write order: (carrier, id, body, request_id,
-- position, merged now). Not past a delivery of the person in flight between
-- the two (a replayed older write claimed while a newer one is out).
-- Why no other replica holds one of them: a later write is never a claim
-- candidate while the carrier, earlier, is open (pending or in flight) in
-- any snapshot; the UPDATE re-checks the state of a row changed meanwhile
-- (an erasure), and the last branch reads the snapshot, in which the rows
-- merged here are still due, so none comes twice. Rows are locked in id order
-- after the carrier's: erasure's lock_person_deliveries takes them in id order.
WITH c AS (
    SELECT d.id, d.external_id, d.backend FROM deliveries d WHERE d.id = ANY($1::bigint[])
), pairs AS (
    SELECT l.id AS lid, max(c.id) AS cid
    FROM c JOIN deliveries l ON l.external_id = c.external_id AND l.backend = c.backend
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
    GROUP BY l.id
), merged AS (
    UPDATE deliveries d SET state = 'merged', merged_into = p.cid, lease_owner = NULL,
        lease_expires_at = NULL, updated_at = $2
    FROM (SELECT * FROM pairs ORDER BY lid) p
    WHERE d.id = p.lid AND d.state IN ('pending', 'retrying') -- lifecycle.DUE
    RETURNING d.id, d.merged_into, d.write_id
)
SELECT m.merged_into, m.id, w.body, w.request_id, w.position, true AS now,
       (SELECT r.traceparent FROM requests r WHERE r.id = w.request_id),
       (SELECT r.resend FROM requests r WHERE r.id = w.request_id)
FROM merged m JOIN profile_writes w ON w.id = m.write_id
UNION ALL
SELECT m.merged_into, m.id, w.body, w.request_id, w.position, false,
       (SELECT r.traceparent FROM requests r WHERE r.id = w.request_id),
       (SELECT r.resend FROM requests r WHERE r.id = w.request_id)
FROM c JOIN deliveries m ON m.external_id = c.external_id AND m.backend = c.backend
    AND m.id > c.id AND m.merged_into = c.id
JOIN profile_writes w ON w.id = m.write_id
ORDER BY 1, 2

-- name: claim_unsendable
-- A claimed payload that cannot be opened (a key gone from the keyring); still
-- leased to us, so ours to settle.
UPDATE deliveries d SET state = 'failed', last_error = u.error,
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest($1::bigint[], $2::text[]) AS u(id, error)
WHERE d.id = u.id AND d.state = 'in_flight' AND d.lease_owner = $3

-- name: record
-- A whole batch in one statement: only rows still leased by `owner` change (a
-- lease that expired and passed to another worker is left alone), and the ids
-- the backend gave are upserted for exactly those rows. When one batch names a
-- person twice, the newest delivery's id wins, as a later row would on SQLite.
WITH r AS (
    SELECT * FROM unnest($3::bigint[], $4::text[], $5::text[], $6::float8[], $7::text[],
                         $8::integer[], $9::text[], $10::float8[], $11::text[])
        AS r(id, state, error, next, match_key, refund, backend_id, sent_at, digests)
), applied AS (
    UPDATE deliveries d SET
        state = r.state,
        last_error = r.error,
        updated_at = $1,
        next_attempt_at = COALESCE(r.next, d.next_attempt_at),
        match_key = COALESCE(r.match_key, d.match_key),
        attempts = d.attempts - r.refund,
        lease_owner = NULL,
        lease_expires_at = NULL,
        -- When the call was sent, not now: a webhook may be stored before this
        -- commits, and is matched by arriving after accepted_at (see the README).
        accepted_at = CASE WHEN r.state IN ('accepted', 'confirmed') -- lifecycle.DELIVERED
            THEN COALESCE(d.accepted_at, r.sent_at, $1) ELSE d.accepted_at END,
        confirmed_at = CASE WHEN r.state = 'confirmed' THEN $1 ELSE d.confirmed_at END
    FROM r
    WHERE d.id = r.id AND d.state = 'in_flight' AND d.lease_owner = $2
    RETURNING d.id, d.external_id, d.backend, r.backend_id, r.digests
), ids AS (
    INSERT INTO backend_ids (external_id, backend, backend_id, updated_at)
    SELECT DISTINCT ON (a.external_id, a.backend) a.external_id, a.backend, a.backend_id, $1
    FROM applied a WHERE a.backend_id IS NOT NULL
    ORDER BY a.external_id, a.backend, a.id DESC
    ON CONFLICT (external_id, backend) DO UPDATE
    SET backend_id = EXCLUDED.backend_id, updated_at = EXCLUDED.updated_at
), sent AS (
    -- What the backend now has, per field (only accepted or confirmed results
    -- carry digests), merged over what it had.
    INSERT INTO sent_fields (external_id, backend, digests, updated_at)
    SELECT DISTINCT ON (a.external_id, a.backend) a.external_id, a.backend, a.digests::jsonb, $1
    FROM applied a WHERE a.digests IS NOT NULL
    ORDER BY a.external_id, a.backend, a.id DESC
    ON CONFLICT (external_id, backend) DO UPDATE
    SET digests = sent_fields.digests || EXCLUDED.digests, updated_at = EXCLUDED.updated_at
)
SELECT count(*) FROM applied

-- name: replay
-- The matching rows are locked first, and a row changed meanwhile is re-checked
-- against the states asked for: an `unconfirmed` delivery that a webhook just
-- confirmed is no longer replayed.
WITH target AS (
    SELECT d.id, EXISTS (
        SELECT 1 FROM deliveries n
        WHERE n.backend = d.backend AND n.external_id = d.external_id AND n.id > d.id
          AND (n.state IN ('accepted', 'confirmed') -- lifecycle.DELIVERED
               -- or carried (merged) by a delivery that was delivered
               OR EXISTS (SELECT 1 FROM deliveries c WHERE c.id = n.merged_into
                          AND c.state IN ('accepted', 'confirmed')))) -- lifecycle.DELIVERED
    AS superseded
    FROM deliveries d
    -- A delivery whose payload was purged or erased has nothing left to send.
    JOIN profile_writes w ON w.id = d.write_id AND w.removed IS NULL
    WHERE d.state {in_states}
      -- Nor does one a write it carries (merged into it) is gone from.
      AND NOT EXISTS (
        SELECT 1 FROM deliveries m JOIN profile_writes mw ON mw.id = m.write_id
        WHERE m.external_id = d.external_id AND m.backend = d.backend AND m.id > d.id
          AND m.merged_into = d.id AND mw.removed IS NOT NULL) AND ($2::bigint IS NULL OR d.id = $2)
      AND ($3::text IS NULL OR d.backend = $3)
    FOR UPDATE OF d
), requeued AS (
    UPDATE deliveries d
    SET state = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $1
    FROM target t
    WHERE d.id = t.id AND NOT t.superseded
), forgotten AS (
    -- An operator sends it again: in full, whatever the backend was last said
    -- to have (an `unconfirmed` write may never have landed).
    DELETE FROM sent_fields s
    USING target t, deliveries d
    WHERE d.id = t.id AND NOT t.superseded
      AND s.external_id = d.external_id AND s.backend = d.backend
)
SELECT id, superseded FROM target ORDER BY id
