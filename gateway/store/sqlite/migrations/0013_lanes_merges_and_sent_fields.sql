-- For sending only what matters (issue: budget): three new delivery states
-- (`unchanged`, `merged`, `unsupported`, gateway/lifecycle.py), the delivery
-- that carried a merged one (`merged_into`), the lane a delivery waits in
-- (`realtime` or `bulk`), and per request its lane and whether the caller
-- asked to send everything again (`resend`). SQLite cannot change a CHECK:
-- the table is rebuilt as in 0011, every row copied with its id and every
-- index created again under its own name (queries name some: INDEXED BY).
ALTER TABLE requests ADD COLUMN lane TEXT NOT NULL DEFAULT 'realtime'
    CHECK (lane IN ('realtime', 'bulk'));
ALTER TABLE requests ADD COLUMN resend INTEGER NOT NULL DEFAULT 0;

CREATE TABLE deliveries_rebuilt (
    id               INTEGER PRIMARY KEY,
    write_id         INTEGER NOT NULL REFERENCES profile_writes(id),
    external_id      TEXT NOT NULL,
    backend          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN (
        'pending', 'in_flight', 'retrying', 'accepted', 'confirmed',
        'failed', 'dead', 'unconfirmed', 'erased', 'unchanged', 'merged', 'unsupported')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  REAL NOT NULL,
    lease_owner      TEXT,
    lease_expires_at REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    accepted_at      REAL,
    confirmed_at     REAL,
    match_key        TEXT,
    lane             TEXT NOT NULL DEFAULT 'realtime' CHECK (lane IN ('realtime', 'bulk')),
    merged_into      INTEGER
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

-- The indexes as 0011 and 0012 left them, predicates written alike.
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
CREATE INDEX deliveries_person ON deliveries (external_id, backend, id);

-- What each backend last accepted of a person, per field, as keyed digests
-- (HMAC under the blind-index key when encryption is on): `digests` is a JSON
-- object {field: digest}. Only a delivery the backend accepted updates it; a
-- failed or dead one never counts as "the backend has it".
CREATE TABLE sent_fields (
    external_id TEXT NOT NULL,
    backend     TEXT NOT NULL,
    digests     TEXT NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (external_id, backend)
) WITHOUT ROWID;
