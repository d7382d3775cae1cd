"""Delivery states written into SQL text, the same for both engines.

Inlined, not bound: a planner uses a partial index only when the query's own
text implies the index's predicate. Safe: every name is checked against the
closed set of states.
"""

from __future__ import annotations

import typing

from gateway.store.base import OPEN_STATES, DeliveryState

_STATES = frozenset(typing.get_args(DeliveryState))

# The open states, for `state IN {OPEN}` in queries that walk the partial indexes.
OPEN = "('pending', 'retrying', 'in_flight')"
assert set(OPEN_STATES) == {"pending", "retrying", "in_flight"}

# Sent and still waiting for an Omneo webhook to confirm it (or past waiting).
AWAITING = "('accepted', 'unconfirmed')"


def state_is(column: str, states: list[DeliveryState]) -> str:
    """`d.state = 'dead'` (one state: `=`, which SQLite needs to match a partial
    index; an IN list does not count), or `d.state IN (...)`."""
    unknown = set(states) - _STATES
    if unknown or not states:
        raise ValueError(f"not delivery states: {sorted(unknown) or states}")
    if len(states) == 1:
        return f"{column} = '{states[0]}'"
    return f"{column} IN (" + ", ".join(f"'{s}'" for s in sorted(set(states))) + ")"
