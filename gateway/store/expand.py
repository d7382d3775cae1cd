"""Making the deliveries of accepted requests, off the request path.

Accept stores a request, its profiles and one `expand_queue` row, which is all
a 202 promises. The first claim after that (for any backend) runs `expand`
in its own transaction before it claims: it takes the oldest queued requests,
up to about `PROFILES_PER_STEP` profiles, inserts one pending delivery per
profile and target in (request, position, target) order, and removes the
requests from the queue, all in one transaction, so a crash leaves a request
either queued or expanded, never half.

Order. Delivery ids order a person's writes for the queue (a later write of a
person waits while an earlier one is open). One expander at a time (SQLite's
writer; on PostgreSQL a transaction-scoped advisory lock that other replicas
skip rather than wait for), taking requests in `seq` order, gives a person's
deliveries ids in the order their requests were accepted: a request whose 202
came before another request was sent has the smaller `seq` and is visible to
every expander that sees the later one. Requests that overlapped in time have
no order the caller could rely on, and get the one expand gives them.

A write erased before it was expanded gets deliveries that are `erased` from
the start (lifecycle.CREATED), so its record reads as if the erasure had come
after; retention never purges a write that is still queued here.
"""

from __future__ import annotations

from gateway.store.plans import Execute, Fetch, FetchValue, Lock, Plan

# Bounded so that a claim's transaction stays short (the SQLite writer is
# shared with accepts): about 1,000 profiles is a few milliseconds of inserts.
PROFILES_PER_STEP = 1000
REQUESTS_PER_STEP = 256


def expand(now: float) -> Plan[int]:
    """Expand the oldest queued requests; returns how many deliveries it made."""
    if not (yield FetchValue("expand_try_lock")):
        return 0  # another replica is expanding; its deliveries show up at its commit
    queued = yield Fetch("expand_take", (REQUESTS_PER_STEP,))
    taken: list[int] = []
    profiles = 0
    for seq, count in queued:
        if taken and profiles + count > PROFILES_PER_STEP:
            break
        taken.append(seq)
        profiles += count
    if not taken:
        return 0
    made: int = yield Execute("expand_deliveries", (taken, now))
    yield Lock("expand_notify", (taken,))
    yield Execute("expand_done", (taken,))
    return made


def backlog() -> Plan[list[tuple[str, str, int, float]]]:
    """(backend, lane, deliveries still to be made, the oldest one's arrival
    time). Queue depth and age count them: a request waiting here is as much
    work to do as a pending delivery."""
    rows = yield Fetch("expand_backlog")
    return [(b, lane, int(count), float(oldest)) for b, lane, count, oldest in rows]
