-- Operator page sessions (gateway/ui/session.py): a cookie is good only while
-- its row is here, so signing out (one row) or `gateway revoke-sessions` (every
-- row) ends it on every process sharing the store. The cookie's random id is
-- kept as its SHA-256, never as sent. Numbered apart from the releases'
-- sequence so that it merges beside migrations written at the same time.
CREATE TABLE ui_sessions (
    id_hash    text PRIMARY KEY,
    app        text NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
