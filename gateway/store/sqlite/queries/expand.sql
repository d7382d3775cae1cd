-- Making deliveries for accepted requests (gateway/store/expand.py).

-- name: expand_try_lock
-- SQLite has one writer, which already runs one expand at a time.
SELECT 1

-- name: expand_take
SELECT q.seq, r.profile_count
FROM expand_queue q JOIN requests r ON r.id = q.request_id
ORDER BY q.seq
LIMIT ?1

-- name: expand_deliveries
-- created_at and next_attempt_at are the arrival time, so a delivery's age
-- includes its wait here and due order is arrival order. A write erased before
-- it was expanded gets its deliveries already `erased` (lifecycle.CREATED).
-- Each delivery waits in its request's lane.
INSERT INTO deliveries (write_id, external_id, backend, next_attempt_at, created_at, updated_at,
                        state, last_error, lane)
SELECT w.id, w.external_id, t.value, w.received_at, w.received_at, ?2,
       CASE WHEN w.removed IS NULL THEN 'pending' ELSE 'erased' END,
       CASE WHEN w.removed IS NULL THEN NULL ELSE 'erased on request' END,
       r.lane
FROM expand_queue q
JOIN requests r ON r.id = q.request_id
JOIN profile_writes w ON w.request_id = q.request_id
JOIN json_each(r.targets) t
WHERE q.seq IN (SELECT value FROM json_each(?1))
ORDER BY q.seq, w.position, t.key

-- name: expand_done
DELETE FROM expand_queue WHERE seq IN (SELECT value FROM json_each(?1))


-- name: expand_backlog
SELECT t.value, r.lane, SUM(r.profile_count), MIN(r.received_at)
FROM expand_queue q JOIN requests r ON r.id = q.request_id, json_each(r.targets) t
GROUP BY t.value, r.lane
