-- How a backend's webhooks will name the person of a delivery (Omneo: the email
-- or the match_criteria identity), set when the backend accepts the delivery.
ALTER TABLE deliveries ADD COLUMN match_key TEXT;
CREATE INDEX deliveries_match ON deliveries (backend, match_key, state);

-- Webhooks are stored before they are answered, then applied.
-- state: received (not applied yet), applied, unmatched, stale, invalid.
CREATE TABLE webhook_events (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    event       TEXT NOT NULL,
    body_hash   TEXT NOT NULL,
    body        BLOB NOT NULL,
    backend_id  TEXT,
    match_key   TEXT,
    event_time  REAL,
    received_at REAL NOT NULL,
    state       TEXT NOT NULL DEFAULT 'received',
    confirmed   INTEGER NOT NULL DEFAULT 0,
    applied_at  REAL,
    UNIQUE (source, event, body_hash)
);
CREATE INDEX webhook_events_state ON webhook_events (state, id);
CREATE INDEX webhook_events_backend_id ON webhook_events (source, backend_id, event_time);
