"""The benchmark, in one command: every part on 127.0.0.1, one table, one JSON file.

    .venv/bin/python bench/run.py [--quick] [--only PART ...] [--json PATH]

Parts, in order: accept, single_post, drain, rate_use, call_efficiency,
memory, end_to_end, confirm, budget (also by number: --only 1 2). Each is
`bench/<part>.py` with
`run(quick: bool) -> list[Row]`. Progress goes to stderr, the table to stdout,
and the rows with the machine they ran on to bench/results.json (or --json).
--quick runs each part for a few seconds on tiny loads: it proves the parts
still work (CI runs it) and its figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import socket
import sqlite3
import sys
import time
import traceback
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import msgspec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# `python bench/run.py` puts bench/ first on sys.path, which is how the parts
# import each other (`from common import Row`), as mypy sees them too. The
# repository root lets a part reach tests/ helpers when the package is not
# installed in development mode.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from common import Row  # noqa: E402  (needs the path above)

PARTS = (
    "accept",
    "single_post",
    "drain",
    "rate_use",
    "call_efficiency",
    "memory",
    "end_to_end",
    "confirm",
    "budget",
)
# What each part measures, for --help.
ABOUT = {
    "accept": "profiles/s stored durably over HTTP, beside a bare app and a minimal SQLite loop",
    "single_post": "one-profile POST latency at fixed rates, and the highest rate within 25 ms",
    "drain": "a 100,000-profile backlog delivered to the three simulators",
    "rate_use": "Ocamba's documented limits: share of the budget used, 429s",
    "call_efficiency": "backend calls per profile, beside a naive forwarder",
    "memory": "peak RSS holding and draining 1,000,000 profiles",
    "end_to_end": "50,000 profiles posted until delivered (SQLite, PostgreSQL) beside a direct"
    " post to the same fakes",
    "confirm": "signed Omneo webhooks posted until every delivery is confirmed, beside a bare app",
    "budget": "backend budget spent on a nightly re-sync, a burst of updates of the same people,"
    " and real-time writes beside a backfill, beside the naive forwarder and resend: true",
}


class Meta(msgspec.Struct, kw_only=True):
    date: str
    hostname: str
    cpu_model: str
    cores: int
    python: str
    versions: dict[str, str]
    commit: str
    quick: bool
    parts: list[str]
    load_average_before: list[float]
    load_average_after: list[float] = []
    seconds: float = 0.0


class Results(msgspec.Struct, kw_only=True):
    meta: Meta
    rows: list[Row]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(root: Path = ROOT) -> str:
    """HEAD's commit read from .git's files (no git process), or ""."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = (root / git.read_text().partition(":")[2].strip()).resolve()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        for base in (git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref:
                    return sha
    except OSError:
        pass
    return ""


def versions() -> dict[str, str]:
    found = {"sqlite": sqlite3.sqlite_version}
    for name in ("uvicorn", "starlette", "msgspec", "httpx"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def resolve(names: Sequence[str]) -> list[str]:
    chosen = []
    for name in names:
        if name.isdigit() and 1 <= int(name) <= len(PARTS):
            chosen.append(PARTS[int(name) - 1])
        elif name in PARTS:
            chosen.append(name)
        else:
            raise SystemExit(f"unknown part {name!r}: one of {', '.join(PARTS)} or 1-{len(PARTS)}")
    return [p for p in PARTS if p in chosen]


def label(part: str) -> str:
    return f"{PARTS.index(part) + 1} {part.replace('_', ' ')}"


def run_part(part: str, quick: bool) -> tuple[list[Row], bool]:
    """The part's rows, and False if it raised (a missing part is not an error:
    the table says so)."""
    try:
        module = importlib.import_module(part)
    except ModuleNotFoundError as exc:
        if exc.name != part:
            raise
        return [
            Row(part=label(part), metric="not available", value=0.0, note=f"no bench/{part}.py")
        ], True
    try:
        raw = module.run(quick)
    except Exception as exc:
        traceback.print_exc()
        return [Row(part=label(part), metric="error", value=0.0, note=repr(exc)[:200])], False
    # Through builtins: a part that imported common under another name has
    # its own Row class, with the same fields.
    return msgspec.convert(msgspec.to_builtins(raw), list[Row]), True


def fmt_value(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}"


def table(rows: Sequence[Row]) -> str:
    head = ("part", "metric", "value", "unit", "target", "met")
    body = [
        (
            r.part,
            r.metric,
            fmt_value(r.value),
            r.unit,
            r.target,
            "" if r.met is None else ("yes" if r.met else "NO"),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    right = {2}  # numbers line up on the right

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), rule, *(line(b) for b in body)])


def main(argv: Sequence[str] | None = None) -> int:
    parts_help = "\n".join(f"  {i} {p}: {ABOUT[p]}" for i, p in enumerate(PARTS, 1))
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=f"parts:\n{parts_help}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds a part, tiny loads")
    parser.add_argument("--only", nargs="+", metavar="PART", help=f"some of: {', '.join(PARTS)}")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results.json", help="default bench/results.json"
    )
    args = parser.parse_args(argv)
    parts = resolve(args.only) if args.only else list(PARTS)

    meta = Meta(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        hostname=socket.gethostname(),
        cpu_model=cpu_model(),
        cores=os.cpu_count() or 0,
        python=platform.python_version(),
        versions=versions(),
        commit=git_commit(),
        quick=args.quick,
        parts=parts,
        load_average_before=list(os.getloadavg()),
    )
    started = time.monotonic()
    rows: list[Row] = []
    ok = True
    for part in parts:
        print(f"[{label(part)}] running{' (quick)' if args.quick else ''}", file=sys.stderr)
        part_started = time.monotonic()
        part_rows, part_ok = run_part(part, args.quick)
        ok = ok and part_ok
        rows += part_rows
        took = time.monotonic() - part_started
        print(f"[{label(part)}] done in {took:.0f}s", file=sys.stderr, flush=True)
    meta.seconds = round(time.monotonic() - started, 1)
    meta.load_average_after = list(os.getloadavg())

    print(table(rows))
    print(
        f"\n{meta.date}, {meta.cpu_model}, {meta.cores} cores, load average "
        f"{meta.load_average_before[0]:.1f} before, {meta.load_average_after[0]:.1f} after"
        + (" (quick mode: the figures mean nothing)" if args.quick else "")
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(
        msgspec.json.format(msgspec.json.encode(Results(meta=meta, rows=rows))) + b"\n"
    )
    print(f"written to {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
