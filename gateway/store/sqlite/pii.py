"""Personal data at rest on SQLite: retention purge and key rotation (erasure: sqlite_erasure).

Plain functions of a connection, run by `SQLiteStore` on its writer thread,
each in one short transaction. Removed payloads are overwritten in the file
too: the connection sets `secure_delete`, and the store checkpoints the WAL
after an erasure or a purge so old page images do not linger there.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import msgspec

from gateway.crypto import Sealer
from gateway.lifecycle import AWAITING_SQL, OPEN_SQL
from gateway.schema import NormalizedProfile
from gateway.store.base import PurgeResult, SealedTable, SealStatus
from gateway.store.pii import (
    REMOVED,
    check_keyring,
    error_prefix,
    event_aad,
    plaintext_refused,
    reseal_error,
    retag_event,
    write_aad,
)

_decode_profile = msgspec.json.Decoder(NormalizedProfile).decode
# What a purged write's deliveries keep of a backend's error text.
PURGED_ERROR = "removed by retention"


def register_keys(conn: sqlite3.Connection, sealer: Sealer) -> None:
    """At open: refuse a keyring that cannot read the store; record the current key."""
    registered = dict(conn.execute("SELECT key_id, fingerprint FROM encryption_keys").fetchall())
    new = check_keyring(sealer, registered)
    if sealer.enabled and not sealer.allow_plaintext:
        # key_id is NULL for plaintext and for removed rows; only the former have a body.
        found = [
            table
            for table in ("profile_writes", "webhook_events")
            if conn.execute(
                f"SELECT 1 FROM {table} WHERE key_id IS NULL AND length(body) > 0 LIMIT 1"
            ).fetchone()
        ]
        if found:
            raise plaintext_refused(found)
    conn.executemany(
        "INSERT INTO encryption_keys (key_id, fingerprint, added_at) VALUES (?, ?, ?)",
        [(key_id, fingerprint, time.time()) for key_id, fingerprint in new],
    )


def purge_step(
    conn: sqlite3.Connection,
    cutoff: float,
    write_after: int | None,
    event_after: int | None,
    span: int,
) -> tuple[PurgeResult, int | None, int | None]:
    """One span of each table not done yet (None: done); returns what it
    removed and where each table goes on (None: past its last row or the cutoff)."""
    now = time.time()
    writes: list[tuple[int]] = []
    events = 0
    if write_after is not None:
        writes = conn.execute(
            "UPDATE profile_writes SET body = ?, key_id = NULL, removed = 'purged', removed_at = ?"
            " WHERE id > ? AND id <= ? AND removed IS NULL AND received_at < ?"
            # Not expanded yet: not delivered yet either (expand makes no
            # deliveries for a removed write, so it must not be removed first).
            " AND request_id NOT IN (SELECT request_id FROM expand_queue)"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.write_id = profile_writes.id"
            f"   AND (d.state IN {OPEN_SQL} OR d.updated_at >= ?))"
            " RETURNING id",
            (REMOVED, now, write_after, write_after + span, cutoff, cutoff),
        ).fetchall()
        # Their lookup tags go too (a webhook this late confirms nothing useful),
        # and backends' error texts, which may quote the profile.
        conn.executemany(
            "UPDATE deliveries SET match_key = NULL,"
            f" last_error = CASE WHEN last_error IS NULL THEN NULL ELSE '{PURGED_ERROR}' END"
            " WHERE write_id = ?",
            writes,
        )
        write_after = _next(conn, "profile_writes", write_after + span, cutoff)
    if event_after is not None:
        events = conn.execute(
            "UPDATE webhook_events SET body = ?, key_id = NULL, match_key = NULL, removed_at = ?"
            " WHERE id > ? AND id <= ? AND removed_at IS NULL AND state != 'received'"
            " AND received_at < ?",
            (REMOVED, now, event_after, event_after + span, cutoff),
        ).rowcount
        event_after = _next(conn, "webhook_events", event_after + span, cutoff)
    return PurgeResult(writes=len(writes), webhook_events=events), write_after, event_after


def purge_keys_step(conn: sqlite3.Connection, cutoff: float, span: int) -> int:
    """Up to `span` Idempotency-Key records older than the cutoff (the caller's
    key may hold an email): a retry that late is not a retry."""
    return conn.execute(
        "DELETE FROM idempotency_keys WHERE rowid IN"
        " (SELECT rowid FROM idempotency_keys WHERE created_at < ? LIMIT ?)",
        (cutoff, span),
    ).rowcount


def _next(conn: sqlite3.Connection, table: str, after: int, cutoff: float) -> int | None:
    # Ids grow with arrival time, so the first row past the cutoff ends the walk.
    row = conn.execute(
        f"SELECT received_at FROM {table} WHERE id > ? ORDER BY id LIMIT 1", (after,)
    ).fetchone()
    return after if row is not None and row[0] < cutoff else None


def seal_status(conn: sqlite3.Connection, sealer: Sealer) -> SealStatus:
    current = sealer.current_id or ""
    counts = [
        conn.execute(
            f"SELECT COUNT(*) FROM {table} WHERE length(body) > 0"
            " AND (key_id IS NULL OR key_id != ?)",
            (current,),
        ).fetchone()[0]
        for table in ("profile_writes", "webhook_events")
    ]
    (retag,) = conn.execute(
        f"SELECT COUNT(*) FROM deliveries WHERE state IN {AWAITING_SQL}"
        " AND match_key IS NOT NULL AND substr(match_key, 1, ?) != ?",
        _prefix_args(sealer),
    ).fetchone()
    (errors,) = conn.execute(
        f"SELECT COUNT(*) FROM deliveries WHERE {_ERROR_TO_RESEAL}", _error_args(sealer)
    ).fetchone()
    return SealStatus(
        profile_writes=counts[0],
        webhook_events=counts[1],
        deliveries_to_retag=retag,
        delivery_errors=errors,
    )


# A backend's error text not sealed under the current key: under an older key,
# or in clear from before (the gateway's own texts get sealed along, harmlessly).
_ERROR_TO_RESEAL = "last_error IS NOT NULL AND substr(last_error, 1, ?) != ?"


def _error_args(sealer: Sealer) -> tuple[int, str]:
    prefix = error_prefix(sealer.current_id)
    return len(prefix), prefix


def _prefix_args(sealer: Sealer) -> tuple[int, str]:
    prefix = sealer.current_tag_prefix() or ""
    return len(prefix), prefix


_RESEAL_SELECT = {
    "profile_writes": "SELECT id, body, request_id, position FROM profile_writes",
    "webhook_events": "SELECT id, body, source, event, body_hash, match_key FROM webhook_events",
}


def reseal_step(
    conn: sqlite3.Connection, sealer: Sealer, table: SealedTable, after: int, span: int
) -> tuple[int, int | None]:
    if table == "deliveries":
        return _reseal_errors(conn, sealer, after, span)
    rows = conn.execute(
        f"{_RESEAL_SELECT[table]} WHERE id > ? AND id <= ? AND length(body) > 0"
        " AND (key_id IS NULL OR key_id != ?)",
        (after, after + span, sealer.current_id),
    ).fetchall()
    if table == "profile_writes":
        conn.executemany(
            "UPDATE profile_writes SET body = ?, key_id = ? WHERE id = ?",
            [(*_reseal(sealer, r[1], write_aad(r[2], r[3])), r[0]) for r in rows],
        )
    else:
        conn.executemany(
            "UPDATE webhook_events SET body = ?, key_id = ?, match_key = ? WHERE id = ?",
            [
                (
                    *_reseal(sealer, r[1], event_aad(r[2], r[3], r[4])),
                    retag_event(sealer, r[5]),
                    r[0],
                )
                for r in rows
            ],
        )
    more = conn.execute(f"SELECT 1 FROM {table} WHERE id > ? LIMIT 1", (after + span,)).fetchone()
    return len(rows), (after + span if more else None)


def _reseal_errors(
    conn: sqlite3.Connection, sealer: Sealer, after: int, span: int
) -> tuple[int, int | None]:
    rows = conn.execute(
        f"SELECT id, last_error FROM deliveries WHERE id > ? AND id <= ? AND {_ERROR_TO_RESEAL}",
        (after, after + span, *_error_args(sealer)),
    ).fetchall()
    conn.executemany(
        "UPDATE deliveries SET last_error = ? WHERE id = ?",
        [(reseal_error(sealer, i, stored), i) for i, stored in rows],
    )
    more = conn.execute("SELECT 1 FROM deliveries WHERE id > ? LIMIT 1", (after + span,)).fetchone()
    return len(rows), (after + span if more else None)


def _reseal(sealer: Sealer, stored: bytes, aad: bytes) -> tuple[bytes, str | None]:
    return sealer.seal(sealer.open(stored, aad), aad)


def retag_step(
    conn: sqlite3.Connection,
    sealer: Sealer,
    match_key_of: Callable[[NormalizedProfile], str | None],
    after: int,
    span: int,
) -> tuple[int, int | None]:
    rows = conn.execute(
        "SELECT d.id, w.body, w.request_id, w.position FROM deliveries d"
        " JOIN profile_writes w ON w.id = d.write_id"
        f" WHERE d.id > ? AND d.id <= ? AND d.state IN {AWAITING_SQL}"
        " AND d.match_key IS NOT NULL AND substr(d.match_key, 1, ?) != ?"
        " AND length(w.body) > 0",
        (after, after + span, *_prefix_args(sealer)),
    ).fetchall()
    updates = [
        (
            sealer.tag(match_key_of(_decode_profile(sealer.open(body, write_aad(rid, pos))))),
            delivery_id,
        )
        for delivery_id, body, rid, pos in rows
    ]
    conn.executemany("UPDATE deliveries SET match_key = ? WHERE id = ?", updates)
    more = conn.execute("SELECT 1 FROM deliveries WHERE id > ? LIMIT 1", (after + span,)).fetchone()
    return len(updates), (after + span if more else None)


def retire_keys(conn: sqlite3.Connection, sealer: Sealer) -> list[str]:
    retired = []
    for (key_id,) in conn.execute("SELECT key_id FROM encryption_keys").fetchall():
        if key_id == sealer.current_id:
            continue
        in_use = (
            any(
                conn.execute(
                    f"SELECT 1 FROM {table} WHERE key_id = ? LIMIT 1", (key_id,)
                ).fetchone()
                for table in ("profile_writes", "webhook_events")
            )
            or conn.execute(
                "SELECT 1 FROM deliveries WHERE substr(last_error, 1, ?) = ? LIMIT 1",
                (len(error_prefix(key_id)), error_prefix(key_id)),
            ).fetchone()
        )
        if not in_use:
            conn.execute("DELETE FROM encryption_keys WHERE key_id = ?", (key_id,))
            retired.append(key_id)
    return retired
