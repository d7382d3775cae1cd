-- Tracing (README "Tracing"): the W3C traceparent of the span that accepted a
-- write, so that its deliveries, sent later and perhaps by another replica,
-- and the webhook that confirms one, join the caller's trace. NULL when
-- tracing was off or the write came before this column.
ALTER TABLE requests ADD COLUMN traceparent TEXT;
