"""Which lane a backend's next claim takes first.

Real-time first, except every `share`-th turn, which takes bulk first
(0: never; 1: always), so a steady real-time stream cannot starve a backfill.
No cheap way to know both lanes are waiting is needed: a bulk-first claim that
finds no bulk falls through to real-time, and a real-time-first one that finds
no real-time takes bulk.
"""

from __future__ import annotations

from gateway.schema import Lane

REALTIME_FIRST: tuple[Lane, ...] = ("realtime", "bulk")
BULK_FIRST: tuple[Lane, ...] = ("bulk", "realtime")


def order(turn: int, share: int) -> tuple[Lane, ...]:
    """The lane order of claim number `turn` (from 0) of one backend."""
    if share and turn % share == share - 1:
        return BULK_FIRST
    return REALTIME_FIRST
