-- Webhooks are stored before they are answered, then applied.
-- state: received (not applied yet), applied, unmatched, stale, invalid.
CREATE TABLE webhook_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text NOT NULL,
    event       text NOT NULL,
    body_hash   text NOT NULL,
    body        bytea NOT NULL,
    backend_id  text,
    match_key   text,
    event_time  double precision,
    received_at double precision NOT NULL,
    state       text NOT NULL DEFAULT 'received'
        CHECK (state IN ('received', 'applied', 'unmatched', 'stale', 'invalid')),
    confirmed   integer NOT NULL DEFAULT 0,
    applied_at  double precision,
    UNIQUE (source, event, body_hash)
);
-- Events still to apply, oldest first; applied ones leave the index.
CREATE INDEX webhook_events_received ON webhook_events (source, id) WHERE state = 'received';
-- "Was a newer event of this backend profile applied already?"
CREATE INDEX webhook_events_backend_id ON webhook_events (source, backend_id, event_time);

-- Webhook correlation only looks at deliveries waiting for a confirmation.
CREATE INDEX deliveries_match ON deliveries (backend, match_key)
    WHERE state IN ('accepted', 'unconfirmed');
