-- Accept stores a request and its profiles and nothing more; the deliveries
-- (one per profile and target) are made later, off the request path, by the
-- first claim that finds requests here (gateway/store/expand.py). A write is
-- as durable as before: the request, its profiles and this row commit together.
-- One row per request, keyed by an ever-growing integer: an append, not a
-- random insert.
CREATE TABLE expand_queue (
    seq        INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests(id)
);

-- A random-key index the accept path never reads: a person's writes are found
-- through their deliveries (indexed below, when expand makes them) and, for
-- requests not yet expanded, through expand_queue.
DROP INDEX profile_writes_external;
CREATE INDEX deliveries_person ON deliveries (external_id, backend, id);
