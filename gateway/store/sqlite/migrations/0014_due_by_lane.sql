-- Lanes (README "Delivery"): a claim takes a backend's due deliveries lane by
-- lane, `realtime` before `bulk` except every GATEWAY_BULK_SHARE-th batch, so
-- the due index leads with the lane: each lane is walked in due order and the
-- walk stops at the limit (sqlite/queries/queue.sql). The due index without
-- the lane served only the claim, and this one serves every query it did
-- (its predicate is the same), so it goes.
CREATE INDEX deliveries_due_lane ON deliveries (backend, lane, next_attempt_at)
    WHERE state IN ('pending', 'retrying');
DROP INDEX deliveries_due_at;
