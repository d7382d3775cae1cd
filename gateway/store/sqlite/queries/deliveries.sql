-- The read side of the delivery queue (gateway/store/ops/deliveries.py).
-- {in_states} is written out by gateway.store.queries.text.

-- name: queue_depths
SELECT backend, lane, COUNT(*), MIN(created_at) FROM deliveries
WHERE state IN ('pending', 'retrying', 'in_flight') -- lifecycle.OPEN
GROUP BY backend, lane ORDER BY backend, lane

-- name: list_deliveries
SELECT d.id, w.request_id, d.external_id, d.backend, d.state, d.attempts,
       d.last_error, d.updated_at
FROM deliveries d JOIN profile_writes w ON w.id = d.write_id
WHERE d.state {in_states} AND (?2 IS NULL OR d.backend = ?2)
ORDER BY d.id LIMIT ?1

-- name: recent_deliveries
-- d.id < a constant: a page further back starts where the last one ended.
SELECT d.id, w.request_id, d.external_id, d.backend, d.state, d.attempts,
       d.last_error, d.updated_at
FROM deliveries d JOIN profile_writes w ON w.id = d.write_id
WHERE d.state {in_states} AND (?2 IS NULL OR d.backend = ?2) AND d.id < coalesce(?3, 9223372036854775807)
ORDER BY d.id DESC LIMIT ?1

-- name: recent_due_deliveries
-- The due index's own term repeated, so that SQLite walks it.
SELECT d.id, w.request_id, d.external_id, d.backend, d.state, d.attempts,
       d.last_error, d.updated_at
FROM deliveries d JOIN profile_writes w ON w.id = d.write_id
WHERE d.state {in_states} AND (?2 IS NULL OR d.backend = ?2) AND d.id < coalesce(?3, 9223372036854775807)
  AND d.state IN ('pending', 'retrying') -- lifecycle.DUE
ORDER BY d.id DESC LIMIT ?1

-- name: count_state
SELECT COUNT(*) FROM deliveries WHERE backend = ?1 AND state {in_states}
