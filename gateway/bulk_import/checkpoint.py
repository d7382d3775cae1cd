"""The checkpoint: how far into the file the gateway has acknowledged every row.

It is replaced atomically (written beside, fsynced, renamed, directory
fsynced) after each acknowledged chunk, so a crash at any instant leaves either
the old or the new one, never half of one. It also pins the file (size,
modification time, a hash of its start) and the options that decide chunk
borders: resuming against another file or other borders would send bodies the
earlier run's idempotency keys do not cover.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgspec

_HEAD_BYTES = 64 * 1024
VERSION = 1


class CheckpointError(ValueError):
    """The checkpoint cannot be used; the message says why and what to do."""


class FileIdentity(msgspec.Struct, frozen=True):
    size: int
    mtime_ns: int
    head_sha256: str


class Counts(msgspec.Struct, kw_only=True):
    rows_read: int = 0
    accepted: int = 0  # rows the gateway stored (including replays)
    replayed: int = 0  # of those, rows in chunks an earlier, interrupted run had already sent
    rejected: int = 0
    chunks: int = 0  # chunks acknowledged


class Checkpoint(msgspec.Struct, kw_only=True):
    version: int = VERSION
    run_id: str
    file: FileIdentity
    format: str
    batch_size: int
    max_body_bytes: int
    targets: list[str] | None = None
    # The lane every batch asks for ("bulk" unless --priority says otherwise).
    # None: a checkpoint from before --priority, whose batches named none; a
    # resumed run keeps sending none, so its batches' bodies (and their
    # idempotency records) stay the same.
    priority: str | None = None
    offset: int = 0  # every record before this byte offset is settled
    next_line: int = 1  # the file line at `offset`
    errors_bytes: int = 0  # the errors file's length that goes with `offset`
    counts: Counts = msgspec.field(default_factory=Counts)
    complete: bool = False


def identify(path: Path) -> FileIdentity:
    stat = path.stat()
    with path.open("rb") as f:
        head = f.read(_HEAD_BYTES)
    return FileIdentity(stat.st_size, stat.st_mtime_ns, hashlib.sha256(head).hexdigest())


def load(path: Path) -> Checkpoint | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        checkpoint = msgspec.json.decode(data, type=Checkpoint)
    except msgspec.DecodeError as exc:
        raise CheckpointError(
            f"the checkpoint {path} is unreadable ({exc}); pass --restart to import from the start"
        ) from None
    if checkpoint.version != VERSION:
        raise CheckpointError(f"the checkpoint {path} has version {checkpoint.version}")
    return checkpoint


def save(path: Path, checkpoint: Checkpoint) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(checkpoint)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself is only durable once the directory is synced.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
