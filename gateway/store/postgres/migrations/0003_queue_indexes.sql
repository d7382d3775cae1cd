-- Partial indexes hold only the rows the dispatcher and the sweeper look for,
-- so their cost follows the live queue, not the history of every delivery.
-- Their predicates name the states literally, and so do the queries (never as
-- a bound parameter): the planner uses a partial index only when it can prove
-- from the query's own text that the query implies the index's predicate.

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

-- Dead letters and the unconfirmed count look at one ended state at a time.
CREATE INDEX deliveries_dead ON deliveries (backend, id) WHERE state = 'dead';
CREATE INDEX deliveries_failed ON deliveries (backend, id) WHERE state = 'failed';
CREATE INDEX deliveries_unconfirmed ON deliveries (backend, id) WHERE state = 'unconfirmed';
