-- PII at rest (gateway/crypto.py). `body` stays a BLOB: sealed values and, for
-- rows written before a key was set, plaintext JSON. `key_id` names the key a
-- body is sealed under (NULL: plaintext or removed), so `gateway rotate-key`
-- finds what is left to do without opening every row.
ALTER TABLE profile_writes ADD COLUMN key_id TEXT;
-- 'purged' (retention) or 'erased' (an erasure request); the body is then empty.
ALTER TABLE profile_writes ADD COLUMN removed TEXT;
ALTER TABLE profile_writes ADD COLUMN removed_at REAL;
ALTER TABLE webhook_events ADD COLUMN key_id TEXT;
ALTER TABLE webhook_events ADD COLUMN removed_at REAL;

-- Every key that has sealed something, by id and fingerprint (not the key):
-- a process missing one, or holding another value under the same id, refuses
-- to start instead of failing on the first old row.
CREATE TABLE encryption_keys (
    key_id      TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    added_at    REAL NOT NULL
);
