"""Validate records with the gateway's own rules and group them into batch bodies.

Rows the gateway would refuse are set aside here, with the same field errors,
so one bad row does not cost its 999 neighbours a round trip. Chunk borders
depend only on the file and the options, never on timing: a resumed run cuts
the same chunks from the same offset, so each chunk's idempotency key (see
`idempotency_key`) names the same body in every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.bulk_import.readers import Record
from gateway.schema import FieldError
from gateway.validation import InvalidInput, normalize_profile, reject_nul

_OPEN = b'{"profiles":['


@dataclass(slots=True)
class Rejection:
    line: int
    errors: list[FieldError]
    row: Any


@dataclass(slots=True)
class Chunk:
    seq: int
    first_line: int
    last_line: int
    next_line: int
    end_offset: int
    rows_read: int = 0
    lines: list[int] = field(default_factory=list)  # the file line of each profile sent
    profiles: list[bytes] = field(default_factory=list)  # each profile's JSON, as read
    sources: list[Any] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def body(
        self,
        targets: Sequence[str] | None,
        keep: Iterable[int] | None = None,
        priority: str | None = None,
    ) -> bytes:
        """The batch body; `keep` leaves out profiles the gateway refused."""
        rows = self.profiles if keep is None else [self.profiles[i] for i in keep]
        return _OPEN + b",".join(rows) + _close(targets, priority)


def _close(targets: Sequence[str] | None, priority: str | None = None) -> bytes:
    tail = b"]"
    if targets:
        tail += b',"targets":' + msgspec.json.encode(list(targets))
    if priority is not None:
        tail += b',"priority":' + msgspec.json.encode(priority)
    return tail + b"}"


def idempotency_key(run_id: str, chunk: Chunk) -> str:
    """The same chunk of the same run always gets the same key, so a chunk sent
    again after a crash is answered from the gateway's record, not stored twice."""
    digest = hashlib.sha256(f"{run_id}:{chunk.first_line}:{chunk.last_line}".encode())
    return f"import-{digest.hexdigest()[:40]}"


def check(record: Record) -> tuple[bytes | None, list[FieldError]]:
    """The profile's JSON to send, or every reason the gateway would refuse it."""
    if record.profile is None or record.errors:
        return None, record.errors
    try:
        reject_nul(record.profile)
    except InvalidInput as exc:
        return None, exc.errors
    _, errors = normalize_profile(record.profile)
    if errors:
        return None, errors
    return msgspec.json.encode(record.profile), []


def make_chunks(
    records: Iterator[Record],
    *,
    batch_size: int,
    max_body_bytes: int,
    targets: Sequence[str] | None,
    priority: str | None = None,
) -> Iterator[Chunk]:
    """Chunks of at most `batch_size` records (accepted or not) whose body stays
    under `max_body_bytes`; a second profile with one `external_id` starts the
    next chunk, because the gateway refuses a batch that names a person twice."""
    overhead = len(_OPEN) + len(_close(targets, priority))
    seq = 0
    chunk: Chunk | None = None
    size = overhead
    ids: set[str] = set()
    held: tuple[Record, bytes | None, list[FieldError]] | None = None
    while True:
        if held is not None:
            record, encoded, errors = held
            held = None
        else:
            next_record = next(records, None)
            if next_record is None:
                break
            record = next_record
            encoded, errors = check(record)
            if encoded is not None and len(encoded) + overhead > max_body_bytes:
                message = f"the profile is larger than the {max_body_bytes}-byte batch limit"
                encoded, errors = None, [FieldError("$", message)]
        if chunk is not None and encoded is not None:
            external_id = record.profile["external_id"] if record.profile else ""
            comma = 1 if chunk.profiles else 0
            too_big = size + comma + len(encoded) > max_body_bytes
            if too_big or external_id in ids:
                held = (record, encoded, errors)
                yield chunk
                chunk = None
                continue
        if chunk is None:
            chunk = Chunk(seq, record.line, record.line, record.next_line, record.end_offset)
            seq += 1
            size, ids = overhead, set()
        chunk.rows_read += 1
        chunk.last_line, chunk.next_line = record.line, record.next_line
        chunk.end_offset = record.end_offset
        if encoded is None:
            chunk.rejected.append(Rejection(record.line, errors, record.source))
        else:
            assert record.profile is not None
            size += len(encoded) + (1 if chunk.profiles else 0)
            ids.add(record.profile["external_id"])
            chunk.lines.append(record.line)
            chunk.profiles.append(encoded)
            chunk.sources.append(record.source)
        if chunk.rows_read >= batch_size:
            yield chunk
            chunk = None
    if chunk is not None:
        yield chunk
