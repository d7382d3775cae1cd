-- What the status endpoints read (gateway/store/ops/views.py).

-- name: ping
-- The health check: the database answers.
SELECT 1

-- name: request_head
SELECT app, received_at, targets, lane, resend FROM requests WHERE id = ?1

-- name: request_writes
SELECT id, position, external_id FROM profile_writes WHERE request_id = ?1 ORDER BY position

-- name: request_deliveries
SELECT d.write_id, d.backend, d.state, d.attempts, d.last_error, d.updated_at, b.backend_id, d.id,
       d.merged_into, c.state
FROM deliveries d
LEFT JOIN backend_ids b ON b.external_id = d.external_id AND b.backend = d.backend
LEFT JOIN deliveries c ON c.id = d.merged_into
JOIN profile_writes w ON w.id = d.write_id
WHERE w.request_id = ?1 ORDER BY d.id

-- name: latest_write
-- A person's writes: through their deliveries, or still waiting for expand.
SELECT request_id, body, received_at, position, removed FROM profile_writes
WHERE id = (SELECT MAX(write_id) FROM (
    SELECT write_id FROM deliveries WHERE external_id = ?1
    UNION
    SELECT w.id FROM expand_queue q JOIN profile_writes w ON w.request_id = q.request_id
    WHERE w.external_id = ?1))

-- name: latest_deliveries
SELECT d.backend, d.state, d.attempts, d.last_error, d.updated_at, b.backend_id, d.id,
       d.merged_into, c.state
FROM deliveries d
LEFT JOIN backend_ids b ON b.external_id = d.external_id AND b.backend = d.backend
LEFT JOIN deliveries c ON c.id = d.merged_into
WHERE d.id IN (SELECT MAX(id) FROM deliveries WHERE external_id = ?1 GROUP BY backend)

-- name: unexpanded_targets
-- The person's writes still waiting for expand, oldest first.
SELECT r.targets, w.received_at, w.removed FROM expand_queue q
JOIN requests r ON r.id = q.request_id
JOIN profile_writes w ON w.request_id = q.request_id
WHERE w.external_id = ?1 ORDER BY q.seq

-- name: backend_ids_of
SELECT backend, backend_id FROM backend_ids WHERE external_id = ?1
