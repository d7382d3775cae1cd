-- As sql/sqlite/0006: one event per body and source, whichever route (event
-- name) it came to, since Omneo's signature does not cover the name. Events
-- stored under both names before keep the first one's key; the later ones get
-- NULL, which never collides, so nothing stored is lost.
ALTER TABLE webhook_events ADD COLUMN dedup_key text;
UPDATE webhook_events SET dedup_key = body_hash
    WHERE id IN (SELECT min(id) FROM webhook_events GROUP BY source, body_hash);
CREATE UNIQUE INDEX webhook_events_dedup ON webhook_events (source, dedup_key);
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_source_event_body_hash_key;

-- Retention purges idempotency records by age.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
-- Erasure removes the records of every request that wrote the person.
CREATE INDEX idempotency_keys_request ON idempotency_keys (request_id);
