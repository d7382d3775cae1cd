"""Stream an NDJSON or CSV file as records, one at a time, from any byte offset.

Nothing here holds more than one record: a 10-million-line file costs the same
memory as a ten-line one. Each record carries the byte offset just past it, so
a checkpoint can say where to start again, and the file line it starts on, so
a rejection can say where to look. A line that cannot be read becomes a record
with an error, never an exception: one bad line must not stop a backfill.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import msgspec

from gateway.bulk_import.csv_mapping import Column, parse_header, row_to_profile
from gateway.schema import FieldError

Format = Literal["ndjson", "csv"]
FORMATS: tuple[Format, ...] = ("ndjson", "csv")
_EXTENSIONS: dict[str, Format] = {".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv"}
# What an unreadable line shows of itself in the errors file: enough to find it.
_EXCERPT = 1000


class ReadError(ValueError):
    """The file as a whole cannot be imported (no header, unknown format)."""


@dataclass(slots=True)
class Record:
    line: int  # the file line the record starts on, from 1
    next_line: int  # the line after it
    end_offset: int  # the byte offset just past it
    profile: dict[str, Any] | None  # what to validate and send; None when unreadable
    source: Any  # the row as the file has it, for the errors file
    errors: list[FieldError] = field(default_factory=list)


def detect_format(path: Path, given: str | None) -> Format:
    if given is not None:
        if given not in FORMATS:
            raise ReadError(f"unknown format {given!r}; use one of {', '.join(FORMATS)}")
        return given
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise ReadError(
            f"cannot tell the format from {path.name!r}; name it .ndjson, .jsonl or .csv, "
            "or pass --format"
        )
    return found


def open_records(
    path: Path, fmt: Format, offset: int, line: int, max_line_bytes: int
) -> Iterator[Record]:
    """Records from byte `offset` (which starts file line `line`) to the end.

    A CSV file's header is read first, whatever the offset, so a bad header is
    an error before any row is sent."""
    if fmt == "csv":
        return _CsvRecords(path, offset, line, max_line_bytes)
    return _ndjson_records(path, offset, line, max_line_bytes)


def _excerpt(raw: bytes) -> str:
    return raw[:_EXCERPT].decode("utf-8", "replace").rstrip("\r\n")


def _ndjson_records(path: Path, offset: int, line: int, max_line_bytes: int) -> Iterator[Record]:
    with path.open("rb") as f:
        f.seek(offset)
        while True:
            # Bounded reads: a file with no newlines must not be read whole.
            raw = f.readline(max_line_bytes + 1)
            if not raw:
                return
            start_line = line
            offset += len(raw)
            line += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                offset += _skip_rest_of_line(f)
                error = FieldError("$", f"line is longer than {max_line_bytes} bytes")
                yield Record(start_line, line, offset, None, _excerpt(raw), [error])
                continue
            if not raw.strip():
                continue
            try:
                value = msgspec.json.decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                error = FieldError("$", f"not valid JSON: {exc}")
                yield Record(start_line, line, offset, None, _excerpt(raw), [error])
                continue
            if not isinstance(value, dict):
                error = FieldError("$", "expected a JSON object (one profile per line)")
                yield Record(start_line, line, offset, None, value, [error])
                continue
            yield Record(start_line, line, offset, value, value)


def _skip_rest_of_line(f: IO[bytes]) -> int:
    skipped = 0
    while True:
        piece = f.readline(1 << 20)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped


class _Lines:
    """The file's lines as text for `csv.reader`, counting bytes and lines as it
    hands them over: the reader pulls exactly the lines of one record, so after
    each record these say where the next one starts."""

    def __init__(self, f: IO[bytes], offset: int, line: int, max_line_bytes: int) -> None:
        self._f = f
        self.offset = offset
        self.line = line
        self.max_line_bytes = max_line_bytes
        self.bad_utf8: list[int] = []
        self.too_long: list[int] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        # Bounded reads, as for NDJSON: one 60 MB line must not be held whole
        # (and copied by the decoder and the CSV parser) to be refused.
        raw = self._f.readline(self.max_line_bytes + 1)
        if not raw:
            raise StopIteration
        if len(raw) > self.max_line_bytes and not raw.endswith(b"\n"):
            self.offset += len(raw) + _skip_rest_of_line(self._f)
            self.line += 1
            self.too_long.append(self.line - 1)
            # Ends the record (or a quoted field of it) here; the record is refused.
            return "\n"
        # The byte-order mark that spreadsheet exports put first is not data.
        bom = self.offset == 0 and raw.startswith(b"\xef\xbb\xbf")
        raw_text = raw[3:] if bom else raw
        self.offset += len(raw)
        self.line += 1
        try:
            return raw_text.decode("utf-8")
        except UnicodeDecodeError:
            self.bad_utf8.append(self.line - 1)
            return raw_text.decode("utf-8", "replace")


class _CsvRecords(Iterator[Record]):
    def __init__(self, path: Path, offset: int, line: int, max_line_bytes: int) -> None:
        self._f = path.open("rb")
        self._max_line_bytes = max_line_bytes
        try:
            head = _Lines(self._f, 0, 1, max_line_bytes)
            header = next(csv.reader(head), None)
            if head.too_long:
                raise ReadError(
                    f"the CSV header (line {head.too_long[0]}) is longer than"
                    f" {max_line_bytes} bytes"
                )
            if header is None:
                raise ReadError("the CSV file is empty: a header row is required")
            self.header = header
            self.columns: list[Column | None] = parse_header(header)
            if offset > head.offset:
                self._f.seek(offset)
                self._lines = _Lines(self._f, offset, line, max_line_bytes)
            else:
                self._lines = head
            self._reader = csv.reader(self._lines)
        except BaseException:
            self._f.close()
            raise

    def __next__(self) -> Record:
        while True:
            start_line = self._lines.line
            try:
                cells = next(self._reader)
            except StopIteration:
                self._f.close()
                raise
            except csv.Error as exc:
                error = FieldError("$", f"not valid CSV: {exc}")
                return self._record(start_line, None, None, [error])
            if self._lines.too_long:
                where = self._lines.too_long[0]
                error = FieldError("$", f"line {where} is longer than {self._max_line_bytes} bytes")
                return self._record(start_line, None, None, [error])
            if not cells or cells == [""]:
                continue  # a blank line
            if self._lines.bad_utf8:
                error = FieldError("$", "not valid UTF-8")
                return self._record(start_line, None, self._source(cells), [error])
            profile, errors = row_to_profile(self.columns, cells)
            return self._record(start_line, profile, self._source(cells), errors)

    def _record(
        self, start: int, profile: dict[str, Any] | None, source: Any, errors: list[FieldError]
    ) -> Record:
        self._lines.bad_utf8.clear()
        self._lines.too_long.clear()
        return Record(start, self._lines.line, self._lines.offset, profile, source, errors)

    def _source(self, cells: list[str]) -> dict[str, Any]:
        row: dict[str, Any] = {
            title: cell for title, cell in zip(self.header, cells, strict=False) if cell != ""
        }
        if len(cells) > len(self.header):
            row["_extra_cells"] = cells[len(self.header) :]
        return row

    def close(self) -> None:
        self._f.close()
