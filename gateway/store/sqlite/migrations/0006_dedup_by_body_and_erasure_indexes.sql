-- Omneo's signature covers the body only, not the URL's event name: a body is
-- one event whichever route it came to. `dedup_key` (the body hash) is unique
-- per source; events stored twice under both names before this migration keep
-- the first one's key and NULL on the later ones (NULLs never collide), so
-- nothing stored is lost. The old UNIQUE (source, event, body_hash) stays: it
-- is implied by the new one.
ALTER TABLE webhook_events ADD COLUMN dedup_key TEXT;
UPDATE webhook_events SET dedup_key = body_hash
    WHERE id IN (SELECT MIN(id) FROM webhook_events GROUP BY source, body_hash);
CREATE UNIQUE INDEX webhook_events_dedup ON webhook_events (source, dedup_key);

-- Retention purges idempotency records by age.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
-- Erasure removes the records of every request that wrote the person.
CREATE INDEX idempotency_keys_request ON idempotency_keys (request_id);
