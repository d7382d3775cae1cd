-- What each backend last accepted of a person, per field
-- (gateway/store/ops/sent_fields.py; written by record_sent_fields in queue.sql).

-- name: sent_fields
SELECT external_id, digests FROM sent_fields
WHERE backend = ?1 AND external_id IN (SELECT value FROM json_each(?2))
