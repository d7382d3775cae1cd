-- Every index on deliveries is paid for on each insert (one row per profile
-- and backend). Keep only what queries use, partial where they look at a few
-- states, so a fresh `pending` row updates four indexes instead of seven.

-- Superseded by the partial deliveries_open_person.
DROP INDEX deliveries_order;

-- Webhook correlation only looks at deliveries waiting for a confirmation.
DROP INDEX deliveries_match;
CREATE INDEX deliveries_match ON deliveries (backend, match_key)
    WHERE state IN ('accepted', 'unconfirmed');

-- Dead letters and unconfirmed counts look at one ended state at a time; a
-- partial index per state (queries name the state as a literal, which SQLite
-- needs to use a partial index) costs a fresh row nothing.
DROP INDEX deliveries_state;
CREATE INDEX deliveries_dead ON deliveries (id) WHERE state = 'dead';
CREATE INDEX deliveries_failed ON deliveries (id) WHERE state = 'failed';
CREATE INDEX deliveries_unconfirmed ON deliveries (id) WHERE state = 'unconfirmed';
