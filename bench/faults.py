"""Fault runs too long for the test suite, from the command line.

`crash`: the crash loop of tests/e2e/crashloop.py (the harness the tests use):
profiles accepted by `gateway serve` on SQLite, then the gateway killed with
SIGKILL at random moments of the drain and restarted on the same file, and
the simulators' records checked: nothing lost, duplicates counted, nothing
sent again once its success was recorded.

    .venv/bin/python bench/faults.py crash --profiles 100000 --kills 3 [--seed N]

Exits 1 when a check fails; the summary line is printed either way.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

# The harness lives with the tests (tests/e2e/crashloop.py); this script is run
# by path, so the repository root is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.crashloop import CrashLoopConfig, run_crash_loop


def crash(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    with tempfile.TemporaryDirectory(prefix="crashloop-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        config = CrashLoopConfig(
            profiles=args.profiles,
            kills=args.kills,
            seed=seed,
            workdir=workdir,
            ocamba_share=args.ocamba_share,
            drain_within=args.drain_within,
        )
        result = run_crash_loop(config)
    print(result.summary())
    failures = [
        name
        for name, bad in (
            ("profiles lost", sum(result.lost.values()) + result.lost_in_store),
            ("accepted writes missing", config.profiles - result.stored_writes),
            ("sent again after recorded success", sum(result.resent_after_success.values())),
            ("recorded but never received", result.recorded_unreceived),
        )
        if bad
    ]
    for name in failures:
        print(f"FAILED: {name}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/faults.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("crash", help="SIGKILL the gateway at random moments of a drain")
    c.add_argument("--profiles", type=int, default=100_000)
    c.add_argument("--kills", type=int, default=3)
    c.add_argument("--seed", type=int, help="replay the kill moments of an earlier run")
    c.add_argument(
        "--ocamba-share", type=float, default=0.1, help="share of profiles also sent to Ocamba"
    )
    c.add_argument("--drain-within", type=float, default=3600.0, help="seconds before giving up")
    c.add_argument("--workdir", help="keep the database and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    return crash(args)


if __name__ == "__main__":
    sys.exit(main())
