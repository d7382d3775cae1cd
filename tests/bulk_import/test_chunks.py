"""Local validation, chunk borders and idempotency keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from gateway.bulk_import.chunks import Chunk, idempotency_key, make_chunks
from gateway.bulk_import.readers import open_records
from gateway.schema import BatchWrite


def _file(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "p.ndjson"
    path.write_text("".join(r + "\n" for r in rows))
    return path


def _chunks(path: Path, offset: int = 0, line: int = 1, **kw: int) -> Iterator[Chunk]:
    size = kw.pop("batch_size", 3)
    limit = kw.pop("max_body_bytes", 1_000_000)
    records = open_records(path, "ndjson", offset, line, 1_000_000)
    return make_chunks(records, batch_size=size, max_body_bytes=limit, targets=None)


def _row(i: int, **extra: object) -> str:
    return msgspec.json.encode({"external_id": f"id-{i}", **extra}).decode()


def test_bad_rows_are_set_aside_with_the_gateways_own_errors(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        [
            _row(1, email="ok@example.com"),
            _row(2, email="nope"),
            _row(3, phone="12"),
            '{"email": "x@example.com"}',
            _row(5, tags=["a", 1]),
            _row(6, note="\u0000"),
        ],
    )
    chunks = list(_chunks(path, batch_size=10))
    assert len(chunks) == 1
    chunk = chunks[0]
    assert chunk.lines == [1] and chunk.rows_read == 6
    found = {r.line: [(e.path, e.message) for e in r.errors] for r in chunk.rejected}
    assert found[2] == [("email", "not a valid email address")]
    assert found[3][0][0] == "phone"
    assert found[4] == [("external_id", "required field is missing")]
    assert found[5] == [("tags[1]", "Expected `str`, got `int`")]
    assert found[6] == [("note", "must not contain the NUL character")]
    # The body is what the gateway takes, with the row exactly as read.
    body = msgspec.json.decode(chunk.body(None), type=BatchWrite)
    assert [p.external_id for p in body.profiles] == ["id-1"]
    assert msgspec.json.decode(chunk.body(["omneo"]))["targets"] == ["omneo"]


def test_chunks_count_every_record_and_end_where_the_next_begins(tmp_path: Path) -> None:
    path = _file(tmp_path, [_row(i) if i != 4 else "{bad" for i in range(8)])
    chunks = list(_chunks(path))
    assert [(c.first_line, c.last_line, c.rows_read, len(c.profiles)) for c in chunks] == [
        (1, 3, 3, 3),
        (4, 6, 3, 2),
        (7, 8, 2, 2),
    ]
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert chunks[-1].end_offset == path.stat().st_size
    # Resuming after chunk 0 cuts the same chunks as the full run did.
    tail = list(_chunks(path, chunks[0].end_offset, chunks[0].next_line))
    assert [(c.first_line, c.last_line, c.profiles) for c in tail] == [
        (c.first_line, c.last_line, c.profiles) for c in chunks[1:]
    ]


def test_a_repeated_external_id_starts_the_next_chunk(tmp_path: Path) -> None:
    path = _file(tmp_path, [_row(1), _row(2), _row(1, first_name="later"), _row(3)])
    chunks = list(_chunks(path, batch_size=10))
    assert [c.lines for c in chunks] == [[1, 2], [3, 4]]


def test_the_body_limit_cuts_chunks_and_refuses_a_row_too_big_alone(tmp_path: Path) -> None:
    rows = [_row(i, full_name="x" * 200) for i in range(5)]
    rows.insert(2, _row(99, attributes={f"a{i}": "v" * 100 for i in range(10)}))
    path = _file(tmp_path, rows)
    chunks = list(_chunks(path, batch_size=10, max_body_bytes=600))
    for chunk in chunks:
        assert len(chunk.body(None)) <= 600
    rejected = [r for c in chunks for r in c.rejected]
    assert [r.line for r in rejected] == [3]
    assert "larger than the 600-byte batch limit" in rejected[0].errors[0].message
    assert sum(len(c.profiles) for c in chunks) == 5 and len(chunks) > 1


def test_idempotency_keys_depend_on_the_run_and_the_lines_only(tmp_path: Path) -> None:
    path = _file(tmp_path, [_row(i) for i in range(6)])
    first, second = list(_chunks(path))
    again, _ = _chunks(path)
    assert idempotency_key("run-a", first) == idempotency_key("run-a", again)
    assert idempotency_key("run-a", first) != idempotency_key("run-a", second)
    assert idempotency_key("run-a", first) != idempotency_key("run-b", first)
    assert len(idempotency_key("run-a", first)) <= 255
