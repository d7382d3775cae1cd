-- What each backend last accepted of a person, per field
-- (gateway/store/ops/sent_fields.py; written by the record query in queue.sql).

-- name: sent_fields
SELECT external_id, digests::text FROM sent_fields
WHERE backend = $1 AND external_id = ANY($2::text[])
