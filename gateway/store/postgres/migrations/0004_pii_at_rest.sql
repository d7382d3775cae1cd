-- PII at rest (gateway/crypto.py), as sql/sqlite/0005. `body` holds sealed
-- values, or plaintext JSON for rows written before a key was set; `key_id`
-- names the key a body is sealed under (NULL: plaintext or removed).
ALTER TABLE profile_writes ADD COLUMN key_id text;
-- 'purged' (retention) or 'erased' (an erasure request); the body is then empty.
ALTER TABLE profile_writes ADD COLUMN removed text
    CHECK (removed IN ('purged', 'erased'));
ALTER TABLE profile_writes ADD COLUMN removed_at double precision;
ALTER TABLE webhook_events ADD COLUMN key_id text;
ALTER TABLE webhook_events ADD COLUMN removed_at double precision;

-- An erasure request cancels a person's open deliveries: state `erased`.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check CHECK (state IN (
    'pending', 'in_flight', 'retrying', 'accepted', 'confirmed',
    'failed', 'dead', 'unconfirmed', 'erased'));

-- Every key that has sealed something, by id and fingerprint (not the key).
CREATE TABLE encryption_keys (
    key_id      text PRIMARY KEY,
    fingerprint text NOT NULL,
    added_at    double precision NOT NULL
);
