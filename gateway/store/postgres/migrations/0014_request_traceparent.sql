-- As sqlite/migrations/0015: the traceparent of the span that accepted the
-- write, for its deliveries and its confirmation to join the caller's trace.
-- Nullable and without a default, so adding it rewrites no row.
ALTER TABLE requests ADD COLUMN traceparent text;
