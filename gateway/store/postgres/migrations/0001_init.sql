-- The PostgreSQL schema, equivalent to sql/sqlite/. Timestamps stay epoch seconds
-- in double precision, as on SQLite: the views and the dispatcher compute with
-- floats, and both engines then answer with the same numbers.

-- Requests as they were accepted.
CREATE TABLE requests (
    id            text PRIMARY KEY,
    app           text NOT NULL,
    received_at   double precision NOT NULL,
    targets       text[] NOT NULL,
    profile_count integer NOT NULL
);

-- Scoped per calling app: two apps may pick the same key.
CREATE TABLE idempotency_keys (
    app        text NOT NULL,
    key        text NOT NULL,
    body_hash  text NOT NULL,
    -- Deferred: accept inserts the key before the request it names, so that a
    -- concurrent request with the same key waits on the primary key right away
    -- (see postgres_accept.py).
    request_id text NOT NULL REFERENCES requests (id) DEFERRABLE INITIALLY DEFERRED,
    created_at double precision NOT NULL,
    PRIMARY KEY (app, key)
);

-- One row per person ever written. Accept upserts, and so row-locks, the people
-- of a request before it takes ids for their writes: two requests writing the
-- same person then take their ids in the order they commit, which is what the
-- queue's ordering rule (`id` orders the writes of one person) relies on.
CREATE TABLE people (
    external_id text PRIMARY KEY,
    writes      bigint NOT NULL,
    updated_at  double precision NOT NULL
);

-- One row per profile per request; `id` orders writes of the same person.
CREATE TABLE profile_writes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id  text NOT NULL REFERENCES requests (id),
    position    integer NOT NULL,
    external_id text NOT NULL,
    -- The normalized profile as encoded JSON, byte for byte. Not JSONB: JSONB
    -- refuses the escape \u0000 that a JSON string may carry, and the body is
    -- only ever read back whole.
    body        bytea NOT NULL,
    received_at double precision NOT NULL
);
CREATE INDEX profile_writes_request ON profile_writes (request_id, position);
CREATE INDEX profile_writes_external ON profile_writes (external_id, id);

-- One row per (profile write, target backend).
CREATE TABLE deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    write_id         bigint NOT NULL REFERENCES profile_writes (id),
    external_id      text NOT NULL,
    backend          text NOT NULL,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN (
        'pending', 'in_flight', 'retrying', 'accepted', 'confirmed',
        'failed', 'dead', 'unconfirmed')),
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    next_attempt_at  double precision NOT NULL,
    lease_owner      text,
    lease_expires_at double precision,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    accepted_at      double precision,
    confirmed_at     double precision,
    -- How a backend's webhooks will name the person of a delivery (Omneo: the
    -- email or the match_criteria identity), set when the backend accepts it.
    match_key        text
);
-- Each index on deliveries is paid for by every insert (one row per profile and
-- backend): the ones here serve every row; the ones that serve a few states
-- are partial (0002, 0003), so a fresh `pending` row updates five indexes.
CREATE INDEX deliveries_write ON deliveries (write_id);
-- A person's deliveries per backend, newest last: the profile view and the
-- replay's "superseded by a newer delivery" check.
CREATE INDEX deliveries_person ON deliveries (external_id, backend, id);

-- The id each backend gave a person (Ocamba id, Omneo id, import_batch profile_id).
CREATE TABLE backend_ids (
    external_id text NOT NULL,
    backend     text NOT NULL,
    backend_id  text NOT NULL,
    updated_at  double precision NOT NULL,
    PRIMARY KEY (external_id, backend)
);
