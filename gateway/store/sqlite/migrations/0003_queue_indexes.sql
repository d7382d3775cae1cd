-- Partial indexes hold only the rows the dispatcher and the sweeper look for,
-- so their cost follows the live queue, not the history of every delivery.

-- Due deliveries in due order: a claim walks this and stops at its limit.
CREATE INDEX deliveries_due_at ON deliveries (backend, next_attempt_at)
    WHERE state IN ('pending', 'retrying');

-- Leases to take over from a worker that died.
CREATE INDEX deliveries_lease ON deliveries (backend, lease_expires_at)
    WHERE state = 'in_flight';

-- "Is an earlier write of this person still open?", asked once per candidate.
CREATE INDEX deliveries_open_person ON deliveries (backend, external_id, id)
    WHERE state IN ('pending', 'retrying', 'in_flight');

-- Omneo deliveries waiting for their webhook, oldest first, for the timeout sweep.
CREATE INDEX deliveries_awaiting ON deliveries (backend, accepted_at)
    WHERE state = 'accepted';

DROP INDEX deliveries_due;
CREATE INDEX deliveries_state ON deliveries (backend, state);
