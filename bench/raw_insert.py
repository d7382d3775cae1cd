"""Ceiling (b): the gateway's rows inserted by a minimal sqlite3 loop, no server.

A fresh database gets the gateway's own migrations and connection settings
(WAL, synchronous=FULL); then, one transaction per batch, one `requests` row,
one `profile_writes` row per profile and one `deliveries` row per profile and
target, with plain `executemany`. Prints one JSON object.

    .venv/bin/python bench/raw_insert.py --database /tmp/raw.db [--size 100] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

import msgspec
from common import TARGETS, batch_body

from gateway.schema import Backend
from gateway.store import migrations
from gateway.store.sqlite import connect
from gateway.validation import parse_batch


def run(database: Path, size: int, seconds: float) -> dict[str, float]:
    conn = connect(database)
    migrations.apply_sqlite(conn)
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    assert (journal, synchronous) == ("wal", 2), (journal, synchronous)  # 2 is FULL
    # The same profiles as the HTTP runs, normalized as the gateway stores them;
    # preparing them is outside the timed loop because it is not the store's work.
    configured: list[Backend] = ["ocamba", "omneo", "import_batch"]
    profiles, _ = parse_batch(msgspec.json.decode(batch_body("bench", size)), configured)
    stored = [(p.external_id, msgspec.json.encode(p)) for p in profiles]
    targets = json.dumps(list(TARGETS))

    next_id = 1
    batches = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        now = time.time()
        request_id = uuid.uuid4().hex
        writes = []
        deliveries = []
        for position, (external_id, body) in enumerate(stored):
            writes.append((next_id, request_id, position, external_id, body, now))
            deliveries += [(next_id, external_id, b, now, now, now) for b in TARGETS]
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
        conn.executemany(
            "INSERT INTO deliveries"
            " (write_id, external_id, backend, next_attempt_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            deliveries,
        )
        conn.execute("COMMIT")
        batches += 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - started
    (count,) = conn.execute("SELECT COUNT(*) FROM profile_writes").fetchone()
    conn.close()
    return {
        "batches": batches,
        "profiles": count,
        "seconds": elapsed,
        "profiles_per_s": count / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=Path, required=True, help="a file that does not exist")
    parser.add_argument("--size", type=int, default=100, help="profiles per batch")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to insert")
    args = parser.parse_args()
    print(json.dumps(run(args.database, args.size, args.seconds)))


if __name__ == "__main__":
    main()
