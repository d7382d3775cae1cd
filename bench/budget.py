"""Part 9, budget: what each backend's call budget is spent on, in three
scenarios, each beside its baselines measured in the same run (issue 15, part 5).

The gateway is measured as it is: whatever it does to spare a backend's budget
(change detection, merging queued writes of one person, lanes) shows in the
figures, and so does its absence. "today" is the gateway with `"resend": true`
on every write, which forces full sends (the behaviour before change
detection); the naive forwarder is bench/naive_forwarder.py's one call per
profile per backend. Calls and profiles are counted from the simulators'
request logs (`/_sim/received`, cleared before each pass), every status
included.

(a) nightly re-sync: N profiles (10,000; quick 300) posted to Omneo,
    import_batch and Ocamba (Ocamba's limits off in its simulator and in the
    gateway's pacer, so the passes finish; Omneo's webhooks on, so its
    deliveries end confirmed), in requests of 500, until every delivery is
    terminal. Then the same N posted again with 1% changed (one attribute of
    every 100th profile), twice: first with `"resend": true` ("today"), then
    without, with another 1% changed (changed against what the backends
    have after the "today" pass). Per backend and pass: profiles sent (Ocamba:
    creates plus import entries; Omneo and import_batch: profiles in the
    bodies) and calls. The naive forwarder sends a sample of the same profiles
    (1,000; quick 50) to the same simulators: it has no memory, so it sends
    100% every night; its calls are scaled from the sample to N.

(b) burst of updates: P people (500; quick 20) created in Ocamba through the
    gateway first, then 10 updates of each within one second (10 batch
    requests of P, one every 0.1 s, each a new value of one attribute), with
    Ocamba's limits on (10/s burst, 150 per window) in the simulator and the
    pacer. The window is shortened from 60 s to 15 s in full mode (quick: 3 s
    with 15 per window), so 150 per window is 4x Ocamba's documented budget:
    the 500 creates of the setup take under a minute instead of 3.5. Call
    counts and calls per person do not depend on it; seconds shrink by up to
    4x against a 60 s window. Per pass: import calls admitted, import calls
    carrying each person (mean and max), 429s, and seconds from the first post
    until the import carrying each person's last value reached Ocamba (its
    request log's arrival time; the pass waits for every last value to be in
    the simulator's profiles). Passes: "today" (`"resend": true`), then the
    gateway as it is, then the naive forwarder (one import call per update,
    8 in flight, with each person's Ocamba id; a 429 loses that update), each
    starting at a window boundary.

(c) backfill beside a real-time stream: Ocamba only, its documented limits
    (10/s, 150 per 60 s window; quick: 3 s windows of 15). A pool of R people
    (50; quick 10) is created first; then a B-profile backfill (50,000; quick
    2,000; new people, in requests of 500) is posted with `"priority":
    "bulk"`, and a real-time stream of single `POST /v1/profiles` updates of
    the pool's people follows at 5 writes/s (quick 2/s) for S seconds (60;
    quick 8), open loop. The backfill does not need to finish: the run stops
    S + T seconds after the stream starts (T = 60; quick 10). Per real-time
    write: seconds from its scheduled send until an Ocamba import carrying its
    value (or a later one of the same person) arrived at the simulator; p50
    and p99, a write that never arrived counting as never. Baseline "one
    lane": the same run with the backfill posted without `priority` (the
    gateway before lanes: real-time behind the whole backlog). The naive
    forwarder is not run here: it has no queue, so its backfill is refused
    with 429s rather than waited behind (part 5 counts them).

    .venv/bin/python bench/budget.py [--quick] [--only a b c] [--profiles N] [--people P]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import msgspec
from budget_backfill import backfill
from budget_burst import burst
from budget_resync import resync
from common import Row

# -- the part -----------------------------------------------------------------


def run(
    quick: bool,
    only: Sequence[str] = ("a", "b", "c"),
    resync_profiles: int | None = None,
    people: int | None = None,
) -> list[Row]:
    rows: list[Row] = []
    if "a" in only:
        n = resync_profiles or (300 if quick else 10_000)
        rows += resync(n, min(n, 50 if quick else 1_000), 120 if quick else 900)
    if "b" in only:
        p = people or (20 if quick else 500)
        rows += burst(p, 3.0, 15, 60) if quick else burst(p, 15.0, 150, 600)
    if "c" in only:
        if quick:
            rows += backfill(2_000, 10, 2.0, 8.0, 10.0, 3.0, 15)
        else:
            rows += backfill(50_000, 50, 5.0, 60.0, 60.0, 60.0, 150)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny loads, short windows")
    parser.add_argument("--only", nargs="+", choices=("a", "b", "c"), default=("a", "b", "c"))
    parser.add_argument("--profiles", type=int, help="(a)'s profiles (10,000; quick 300)")
    parser.add_argument("--people", type=int, help="(b)'s people (500; quick 20)")
    args = parser.parse_args()
    for row in run(args.quick, args.only, args.profiles, args.people):
        print(msgspec.json.encode(row).decode())


if __name__ == "__main__":
    main()
