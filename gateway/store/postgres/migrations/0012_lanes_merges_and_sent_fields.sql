-- As sqlite/migrations/0013: three new delivery states (`unchanged`,
-- `merged`, `unsupported`), `merged_into`, the lane of a request and of its
-- deliveries, `resend` per request, and what each backend last accepted of a
-- person, per field (sent_fields).
ALTER TABLE requests ADD COLUMN lane text NOT NULL DEFAULT 'realtime'
    CHECK (lane IN ('realtime', 'bulk'));
ALTER TABLE requests ADD COLUMN resend boolean NOT NULL DEFAULT false;

ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check CHECK (state IN (
    'pending', 'in_flight', 'retrying', 'accepted', 'confirmed',
    'failed', 'dead', 'unconfirmed', 'erased', 'unchanged', 'merged', 'unsupported'));
ALTER TABLE deliveries ADD COLUMN lane text NOT NULL DEFAULT 'realtime'
    CHECK (lane IN ('realtime', 'bulk'));
ALTER TABLE deliveries ADD COLUMN merged_into bigint;

CREATE TABLE sent_fields (
    external_id text NOT NULL,
    backend     text NOT NULL,
    digests     jsonb NOT NULL,
    updated_at  double precision NOT NULL,
    PRIMARY KEY (external_id, backend)
);
