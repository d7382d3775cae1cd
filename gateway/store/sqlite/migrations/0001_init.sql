-- Requests as they were accepted; `targets` is a JSON list of backend names.
CREATE TABLE requests (
    id            TEXT PRIMARY KEY,
    app           TEXT NOT NULL,
    received_at   REAL NOT NULL,
    targets       TEXT NOT NULL,
    profile_count INTEGER NOT NULL
);

-- Scoped per calling app: two apps may pick the same key.
CREATE TABLE idempotency_keys (
    app        TEXT NOT NULL,
    key        TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    request_id TEXT NOT NULL REFERENCES requests(id),
    created_at REAL NOT NULL,
    PRIMARY KEY (app, key)
);

-- One row per profile per request; `id` orders writes of the same person.
CREATE TABLE profile_writes (
    id          INTEGER PRIMARY KEY,
    request_id  TEXT NOT NULL REFERENCES requests(id),
    position    INTEGER NOT NULL,
    external_id TEXT NOT NULL,
    body        BLOB NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX profile_writes_request ON profile_writes (request_id, position);
CREATE INDEX profile_writes_external ON profile_writes (external_id, id);

-- One row per (profile write, target backend).
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    write_id         INTEGER NOT NULL REFERENCES profile_writes(id),
    external_id      TEXT NOT NULL,
    backend          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  REAL NOT NULL,
    lease_owner      TEXT,
    lease_expires_at REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    accepted_at      REAL,
    confirmed_at     REAL
);
CREATE INDEX deliveries_due ON deliveries (backend, state, next_attempt_at);
CREATE INDEX deliveries_order ON deliveries (backend, external_id, id);
CREATE INDEX deliveries_write ON deliveries (write_id);

-- The id each backend gave a person (Ocamba id, Omneo id, import_batch profile_id).
CREATE TABLE backend_ids (
    external_id TEXT NOT NULL,
    backend     TEXT NOT NULL,
    backend_id  TEXT NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (external_id, backend)
);
