-- As sqlite/migrations/0014: the due index leads with the lane, so a claim
-- walks each lane of a backend in due order and stops at the limit
-- (postgres/queries/queue.sql); the due index without the lane served only
-- the claim, so it goes.
CREATE INDEX deliveries_due_lane ON deliveries (backend, lane, next_attempt_at)
    WHERE state IN ('pending', 'retrying');
DROP INDEX deliveries_due_at;
