-- deliveries.state gets the CHECK PostgreSQL has had since its 0001 (with
-- 'erased' since its 0004), so a state outside gateway/gateway/lifecycle.py is
-- refused by both engines alike. SQLite cannot add a CHECK to a table: the
-- table is rebuilt (sqlite.org/lang_altertable.html, "other kinds of table
-- schema changes") with the same columns in the same order, every row copied
-- with its id, and every index created again under its own name, as
-- queries name some of them (INDEXED BY). Nothing references deliveries, so
-- the foreign keys stay on. Numbered after 0010.
CREATE TABLE deliveries_rebuilt (
    id               INTEGER PRIMARY KEY,
    write_id         INTEGER NOT NULL REFERENCES profile_writes(id),
    external_id      TEXT NOT NULL,
    backend          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN (
        'pending', 'in_flight', 'retrying', 'accepted', 'confirmed',
        'failed', 'dead', 'unconfirmed', 'erased')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  REAL NOT NULL,
    lease_owner      TEXT,
    lease_expires_at REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    accepted_at      REAL,
    confirmed_at     REAL,
    match_key        TEXT
);
INSERT INTO deliveries_rebuilt (
    id, write_id, external_id, backend, state, attempts, last_error, next_attempt_at,
    lease_owner, lease_expires_at, created_at, updated_at, accepted_at, confirmed_at, match_key)
SELECT
    id, write_id, external_id, backend, state, attempts, last_error, next_attempt_at,
    lease_owner, lease_expires_at, created_at, updated_at, accepted_at, confirmed_at, match_key
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_rebuilt RENAME TO deliveries;

-- The indexes as 0001, 0003 and 0004 left them, predicates written alike.
CREATE INDEX deliveries_write ON deliveries (write_id);
CREATE INDEX deliveries_due_at ON deliveries (backend, next_attempt_at)
    WHERE state IN ('pending', 'retrying');
CREATE INDEX deliveries_lease ON deliveries (backend, lease_expires_at)
    WHERE state = 'in_flight';
CREATE INDEX deliveries_open_person ON deliveries (backend, external_id, id)
    WHERE state IN ('pending', 'retrying', 'in_flight');
CREATE INDEX deliveries_awaiting ON deliveries (backend, accepted_at)
    WHERE state = 'accepted';
CREATE INDEX deliveries_match ON deliveries (backend, match_key)
    WHERE state IN ('accepted', 'unconfirmed');
CREATE INDEX deliveries_dead ON deliveries (id) WHERE state = 'dead';
CREATE INDEX deliveries_failed ON deliveries (id) WHERE state = 'failed';
CREATE INDEX deliveries_unconfirmed ON deliveries (id) WHERE state = 'unconfirmed';
