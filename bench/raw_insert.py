"""Ceiling (b) of part 1 and the loop beside it: rows inserted by a bare sqlite3
loop, no server, one transaction per batch, WAL and synchronous=FULL.

- `--schema minimal` (ceiling (b)): the simplest store that does the accept
  job, in a plain `sqlite3.connect`: one `profiles` row per profile (its
  external id and its encoded body) and one `deliveries` row per profile and
  target (backend, state, due), with ONE index, on deliveries (backend, state,
  due), for a dispatcher to claim from.
- `--schema gateway`: the gateway's own schema, built from its migration files
  (so it follows schema changes) and opened with its connection settings, and
  the rows its accept writes (gateway/store/sqlite/accept.py): one `requests`
  row, one `profile_writes` row per profile and one `expand_queue` row, with
  plain `executemany`. The deliveries are made later, off the request path,
  by the dispatcher's first claim (gateway/store/expand.py), as in the gateway.
- `--fsync`: what one durable commit costs on this disk, commits/s of a
  transaction that updates one small row (WAL, synchronous=FULL).

Prints one JSON object.

    .venv/bin/python bench/raw_insert.py --database /tmp/raw.db [--schema minimal]
        [--size 100] [--seconds 5]
    .venv/bin/python bench/raw_insert.py --database /tmp/commit.db --fsync [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
from common import TARGETS, batch_body

from gateway.schema import Backend
from gateway.store import migrations
from gateway.store.sqlite import connect
from gateway.validation import parse_batch

MINIMAL_SCHEMA = (
    "CREATE TABLE profiles (id INTEGER PRIMARY KEY, external_id TEXT NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE deliveries (id INTEGER PRIMARY KEY, profile_id INTEGER NOT NULL,"
    " backend TEXT NOT NULL, state TEXT NOT NULL, due REAL NOT NULL)",
    "CREATE INDEX deliveries_claim ON deliveries (backend, state, due)",
)


def _plain(database: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _check_durable(conn: sqlite3.Connection) -> None:
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    assert (journal, synchronous) == ("wal", 2), (journal, synchronous)  # 2 is FULL


def _stored(size: int) -> list[tuple[str, bytes]]:
    """The same profiles as the HTTP runs, normalized as the gateway stores them;
    prepared outside the timed loop because it is not the store's work."""
    configured: list[Backend] = ["ocamba", "omneo", "import_batch"]
    profiles = parse_batch(msgspec.json.decode(batch_body("bench", size)), configured).profiles
    return [(p.external_id, msgspec.json.encode(p)) for p in profiles]


def _timed(seconds: float, one: Callable[[], None]) -> tuple[int, float]:
    """Calls `one` until `seconds` have passed; (calls, elapsed)."""
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        one()
        calls += 1
        if time.perf_counter() >= deadline:
            return calls, time.perf_counter() - started


def minimal(database: Path, size: int, seconds: float) -> dict[str, float]:
    conn = _plain(database)
    _check_durable(conn)
    for statement in MINIMAL_SCHEMA:
        conn.execute(statement)
    stored = _stored(size)
    next_id = 1

    def batch() -> None:
        nonlocal next_id
        now = time.time()
        profiles = []
        deliveries = []
        for external_id, body in stored:
            profiles.append((next_id, external_id, body))
            deliveries += [(next_id, b, "pending", now) for b in TARGETS]
            next_id += 1
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO profiles (id, external_id, body) VALUES (?, ?, ?)", profiles)
        conn.executemany(
            "INSERT INTO deliveries (profile_id, backend, state, due) VALUES (?, ?, ?, ?)",
            deliveries,
        )
        conn.execute("COMMIT")

    batches, elapsed = _timed(seconds, batch)
    (count,) = conn.execute("SELECT COUNT(*) FROM profiles").fetchone()
    conn.close()
    return {
        "batches": batches,
        "profiles": count,
        "seconds": elapsed,
        "profiles_per_s": count / elapsed,
    }


def gateway_schema(database: Path, size: int, seconds: float) -> dict[str, float]:
    conn = connect(database)
    migrations.apply_sqlite(conn)
    _check_durable(conn)
    stored = _stored(size)
    targets = json.dumps(list(TARGETS))
    next_id = 1

    def batch() -> None:
        nonlocal next_id
        now = time.time()
        request_id = uuid.uuid4().hex
        writes = []
        for position, (external_id, body) in enumerate(stored):
            writes.append((next_id, request_id, position, external_id, body, now))
            next_id += 1
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO requests (id, app, received_at, targets, profile_count)"
            " VALUES (?, ?, ?, ?, ?)",
            (request_id, "bench", now, targets, size),
        )
        conn.executemany(
            "INSERT INTO profile_writes (id, request_id, position, external_id, body, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            writes,
        )
        conn.execute("INSERT INTO expand_queue (request_id) VALUES (?)", (request_id,))
        conn.execute("COMMIT")

    batches, elapsed = _timed(seconds, batch)
    (count,) = conn.execute("SELECT COUNT(*) FROM profile_writes").fetchone()
    conn.close()
    return {
        "batches": batches,
        "profiles": count,
        "seconds": elapsed,
        "profiles_per_s": count / elapsed,
    }


def commit_cost(database: Path, seconds: float) -> dict[str, float]:
    """Durable commits/s of a transaction that updates one small row: about one
    fsync of the WAL each, so 1000 / commits_per_s is an fsync's cost in ms."""
    conn = _plain(database)
    _check_durable(conn)
    conn.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    conn.execute("INSERT INTO counter (id, n) VALUES (1, 0)")

    def commit() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
        conn.execute("COMMIT")

    commits, elapsed = _timed(seconds, commit)
    conn.close()
    return {
        "commits": commits,
        "seconds": elapsed,
        "commits_per_s": commits / elapsed,
        "ms_per_commit": elapsed / commits * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=Path, required=True, help="a file that does not exist")
    parser.add_argument(
        "--schema", choices=("minimal", "gateway"), default="minimal", help="default minimal"
    )
    parser.add_argument("--fsync", action="store_true", help="time one-row commits instead")
    parser.add_argument("--size", type=int, default=100, help="profiles per batch")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to insert")
    args = parser.parse_args()
    if args.fsync:
        result = commit_cost(args.database, args.seconds)
    elif args.schema == "minimal":
        result = minimal(args.database, args.size, args.seconds)
    else:
        result = gateway_schema(args.database, args.size, args.seconds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
