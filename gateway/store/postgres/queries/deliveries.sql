-- The read side of the delivery queue (gateway/store/ops/deliveries.py).
-- {in_states} is written out by gateway.store.queries.text.

-- name: queue_depths
SELECT backend, lane, count(*), min(created_at) FROM deliveries
WHERE state IN ('pending', 'retrying', 'in_flight') -- lifecycle.OPEN
GROUP BY backend, lane ORDER BY backend, lane

-- name: list_deliveries
SELECT d.id, w.request_id, d.external_id, d.backend, d.state, d.attempts,
       d.last_error, d.updated_at
FROM deliveries d JOIN profile_writes w ON w.id = d.write_id
WHERE d.state {in_states} AND ($2::text IS NULL OR d.backend = $2)
ORDER BY d.id LIMIT $1

-- name: recent_deliveries
SELECT d.id, w.request_id, d.external_id, d.backend, d.state, d.attempts,
       d.last_error, d.updated_at
FROM deliveries d JOIN profile_writes w ON w.id = d.write_id
WHERE d.state {in_states} AND ($2::text IS NULL OR d.backend = $2)
  AND ($3::bigint IS NULL OR d.id < $3)
ORDER BY d.id DESC LIMIT $1

-- name: recent_due_deliveries
-- As recent_deliveries; the due index's term is implied here already, and
-- repeated only because SQLite needs it (the plan names one query for both).
SELECT d.id, w.request_id, d.external_id, d.backend, d.state, d.attempts,
       d.last_error, d.updated_at
FROM deliveries d JOIN profile_writes w ON w.id = d.write_id
WHERE d.state {in_states} AND ($2::text IS NULL OR d.backend = $2)
  AND ($3::bigint IS NULL OR d.id < $3)
  AND d.state IN ('pending', 'retrying') -- lifecycle.DUE
ORDER BY d.id DESC LIMIT $1

-- name: count_state
SELECT count(*) FROM deliveries WHERE backend = $1 AND state {in_states}
