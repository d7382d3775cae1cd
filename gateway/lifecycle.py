"""The delivery lifecycle in one place: states, transitions, outcomes, groups.

Both engines' SQL, the dispatcher, the dead-letter API and the operator page
read their state lists from here, and tests/store/test_lifecycle.py holds this
table against both schemas' CHECK constraint and against the transitions the
store really performs. Imports nothing from the gateway, so any layer may use it.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Literal

DeliveryState = Literal[
    "pending",
    "in_flight",
    "retrying",
    "accepted",
    "confirmed",
    "failed",
    "dead",
    "unconfirmed",
    "erased",  # cancelled by an erasure request before it was sent; never sent
    "unchanged",  # the backend already has every field this write would send: no call
    "merged",  # carried by a later claim of the same person (deliveries.merged_into)
    "unsupported",  # the backend's API cannot apply this change (reason in last_error)
]
STATES: tuple[DeliveryState, ...] = typing.get_args(DeliveryState)
# Every delivery is written in this state (the column's default on both engines).
INITIAL: DeliveryState = "pending"
# The states a delivery is created in: INITIAL, or `erased` where expand
# (gateway/store/expand.py) makes the deliveries of a write that an erasure
# request reached before they were made: cancelled before they could be sent.
CREATED: frozenset[DeliveryState] = frozenset({INITIAL, "erased"})

# What a backend adapter says of one delivery (gateway/backends/base.py):
# accepted:  the backend took it; final where the backend never confirms.
# confirmed: the backend's own synchronous answer says it is done.
# failed:    permanent, `error` says why a person should care.
# retry:     transient; the dispatcher schedules another attempt.
# unsupported: the backend's API has no way to apply this change (Ocamba
#            cannot update a known profile's email, phone or name).
# unchanged: the backend already has every field this write would send; no
#            call was made (the dispatcher's change detection).
OutcomeState = Literal["accepted", "confirmed", "failed", "retry", "unsupported", "unchanged"]

# The state each outcome records. `retry` becomes `retrying`, or `dead` once
# the retry policy is exhausted: that choice is the dispatcher's, not the
# adapter's.
OUTCOME_STATE: Mapping[OutcomeState, DeliveryState] = {
    "accepted": "accepted",
    "confirmed": "confirmed",
    "failed": "failed",
    "retry": "retrying",
    "unsupported": "unsupported",
    "unchanged": "unchanged",
}
RETRY_EXHAUSTED: DeliveryState = "dead"

# Every change of state the gateway makes: from-state -> allowed to-states. A
# write that leaves the state as it was (a lease taken over, `CASE ... ELSE
# state`) is not a transition.
TRANSITIONS: Mapping[DeliveryState, frozenset[DeliveryState]] = {
    # claimed by a worker; cancelled by an erasure request before sending; or
    # carried by the claim of an earlier write of the same person (merged).
    "pending": frozenset({"in_flight", "erased", "merged"}),
    # claimed again when due; erased as pending; an operator's replay pulls it
    # forward (attempts back to 0).
    "retrying": frozenset({"in_flight", "erased", "pending", "merged"}),
    # the recorded outcome (OUTCOME_STATE, `dead` when retries are exhausted,
    # `retrying` also when a claim is handed back unsent); `failed` also when
    # the claimed payload cannot be decoded; `erased` when an erasure request
    # lands while it is out (the outcome is then not recorded).
    "in_flight": frozenset(
        {
            "accepted",
            "confirmed",
            "failed",
            "dead",
            "retrying",
            "erased",
            "unsupported",
            "unchanged",
        }
    ),
    # Omneo's webhook confirms it, or the sweep gives up waiting for one.
    "accepted": frozenset({"confirmed", "unconfirmed"}),
    # a late webhook still confirms it; an operator may send it again.
    "unconfirmed": frozenset({"confirmed", "pending"}),
    # an operator's replay (dead letters).
    "failed": frozenset({"pending"}),
    "dead": frozenset({"pending"}),
    "confirmed": frozenset(),
    "erased": frozenset(),
    "unchanged": frozenset(),
    "merged": frozenset(),
    "unsupported": frozenset(),
}

# Groups. Tuples keep the order the partial indexes' predicates were written
# in (sql/*/0003_queue_indexes.sql, 0002/0004): SQLite uses a partial index
# only when the query repeats the index's term as written.

# Waiting for a worker: what a claim looks for.
DUE: tuple[DeliveryState, ...] = ("pending", "retrying")
# States a delivery can still leave on its own; the rest wait for a person
# (failed, dead) or for a webhook (accepted on Omneo, unconfirmed). An earlier
# open delivery of a person holds back the later ones.
OPEN: tuple[DeliveryState, ...] = ("pending", "retrying", "in_flight")
# Sent and still waiting for an Omneo webhook to confirm it (or past waiting).
AWAITING: tuple[DeliveryState, ...] = ("accepted", "unconfirmed")
# The backend has the profile: a later delivery in one of these supersedes an
# earlier one that a replay would otherwise send again.
DELIVERED: tuple[DeliveryState, ...] = ("accepted", "confirmed")
# Ended and waiting for a person: what dead letters list and replay.
REPLAYABLE: tuple[DeliveryState, ...] = ("dead", "failed", "unconfirmed")
ReplayableState = Literal["dead", "failed", "unconfirmed"]
# No transition leaves these.
TERMINAL: tuple[DeliveryState, ...] = tuple(s for s in STATES if not TRANSITIONS[s])
# What the operator page shows as going wrong, and what it counts per backend.
FAILING: tuple[DeliveryState, ...] = ("retrying", "failed", "dead")


def allowed(before: DeliveryState, after: DeliveryState) -> bool:
    """Whether the gateway may move a delivery from `before` to `after`."""
    return before == after or after in TRANSITIONS[before]


def sql_list(states: tuple[DeliveryState, ...]) -> str:
    """`('pending', 'retrying')`, for `state IN {...}` in SQL text. Inlined,
    not bound: a planner uses a partial index only when the query's own text
    implies the index's predicate. Safe: every name is one of STATES."""
    unknown = set(states) - set(STATES)
    if unknown or not states:
        raise ValueError(f"not delivery states: {sorted(unknown) or states}")
    return "(" + ", ".join(f"'{s}'" for s in states) + ")"


def sql_value(state: DeliveryState) -> str:
    """`'dead'`: one state as an SQL literal, checked like sql_list."""
    return sql_list((state,))[1:-1]


def state_is(column: str, states: list[DeliveryState]) -> str:
    """`d.state = 'dead'` (one state: `=`, which SQLite needs to match a partial
    index; an IN list does not count), or `d.state IN (...)`."""
    if len(states) == 1:
        return f"{column} = {sql_value(states[0])}"
    return f"{column} IN {sql_list(tuple(sorted(set(states))))}"


# The SQL text forms of the groups, for f-strings in both engines' queries.
DUE_SQL = sql_list(DUE)
OPEN_SQL = sql_list(OPEN)
AWAITING_SQL = sql_list(AWAITING)
DELIVERED_SQL = sql_list(DELIVERED)
# STATES is also the CHECK on deliveries.state (sqlite 0011, postgres 0004),
# written out in those migrations: a new state needs a migration on each.

assert set(TRANSITIONS) == set(STATES)
assert set(OUTCOME_STATE.values()) <= set(TRANSITIONS["in_flight"])
assert set(REPLAYABLE) == set(typing.get_args(ReplayableState))
