-- As sqlite/migrations/0012: accept stores a request and its profiles; the
-- deliveries are made later by the first claim that finds the request here,
-- under an advisory lock so that one replica at a time expands, in `seq`
-- order (gateway/store/expand.py).
CREATE TABLE expand_queue (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id text NOT NULL REFERENCES requests(id)
);

-- Random-key index the accept path does not read; deliveries_person (from
-- 0001) and expand_queue find a person's writes instead.
DROP INDEX profile_writes_external;

-- Accept no longer upserts a row per person: expand, one replica at a time,
-- decides the order of a person's deliveries. The table stays (empty from
-- now on for new people) so that nothing an operator queried vanishes.
COMMENT ON TABLE people IS 'unused since migration 0011; kept for audit';
