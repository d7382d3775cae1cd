-- Making deliveries for accepted requests (gateway/store/expand.py).

-- name: expand_try_lock
-- One replica expands at a time; the others skip (they would only wait).
-- The key is gateway.store.postgres.db.advisory_key('expand').
SELECT pg_try_advisory_xact_lock(-6430404667923494384)

-- name: expand_take
SELECT q.seq, r.profile_count
FROM expand_queue q JOIN requests r ON r.id = q.request_id
ORDER BY q.seq
LIMIT $1

-- name: expand_deliveries
-- created_at and next_attempt_at are the arrival time, so a delivery's age
-- includes its wait here and due order is arrival order. A write erased before
-- it was expanded gets its deliveries already `erased` (lifecycle.CREATED).
-- Each delivery waits in its request's lane.
INSERT INTO deliveries (write_id, external_id, backend, next_attempt_at, created_at, updated_at,
                        state, last_error, lane)
SELECT w.id, w.external_id, t.backend, w.received_at, w.received_at, $2,
       CASE WHEN w.removed IS NULL THEN 'pending' ELSE 'erased' END,
       CASE WHEN w.removed IS NULL THEN NULL ELSE 'erased on request' END,
       r.lane
FROM expand_queue q
JOIN requests r ON r.id = q.request_id
JOIN profile_writes w ON w.request_id = q.request_id
CROSS JOIN LATERAL unnest(r.targets) WITH ORDINALITY AS t(backend, n)
WHERE q.seq = ANY($1::bigint[])
ORDER BY q.seq, w.position, t.n

-- name: expand_notify
-- Wake every replica's dispatchers for the backends that just got work
-- (sent at commit).
SELECT pg_notify('gateway_deliveries', t.backend)
FROM (SELECT DISTINCT unnest(r.targets) AS backend
      FROM expand_queue q JOIN requests r ON r.id = q.request_id
      WHERE q.seq = ANY($1::bigint[])) t

-- name: expand_done
DELETE FROM expand_queue WHERE seq = ANY($1::bigint[])


-- name: expand_backlog
SELECT t.backend, r.lane, sum(r.profile_count)::bigint, min(r.received_at)
FROM expand_queue q JOIN requests r ON r.id = q.request_id
CROSS JOIN LATERAL unnest(r.targets) AS t(backend)
GROUP BY t.backend, r.lane
