"""Streaming readers: NDJSON and the CSV column mapping, from any offset."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from gateway.bulk_import.csv_mapping import MappingError
from gateway.bulk_import.readers import (
    Format,
    ReadError,
    Record,
    detect_format,
    open_records,
)


def _read(path: Path, fmt: Format = "ndjson", offset: int = 0, line: int = 1) -> list[Record]:
    return list(open_records(path, fmt, offset, line, 10_000))


def test_ndjson_rows_bad_lines_and_offsets(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    lines = [
        b'{"external_id": "a", "email": "a@example.com"}\n',
        b"\n",  # blank: skipped, but still counted as a line
        b"{not json\n",
        b"[1, 2]\n",
        b'{"external_id": "b"}',  # no newline at the end of the file
    ]
    path.write_bytes(b"".join(lines))
    records = _read(path)
    assert [r.line for r in records] == [1, 3, 4, 5]
    assert records[0].profile == {"external_id": "a", "email": "a@example.com"}
    assert records[0].end_offset == len(lines[0]) and records[0].next_line == 2
    bad_json, not_object = records[1], records[2]
    assert bad_json.profile is None and bad_json.source == "{not json"
    assert bad_json.errors[0].path == "$" and "not valid JSON" in bad_json.errors[0].message
    assert not_object.profile is None and "JSON object" in not_object.errors[0].message
    assert records[3].end_offset == path.stat().st_size and records[3].next_line == 6
    # Starting at a record's end offset gives exactly the records after it.
    tail = _read(path, offset=records[1].end_offset, line=records[1].next_line)
    assert [r.line for r in tail] == [4, 5]


def test_an_overlong_ndjson_line_is_one_rejected_record(tmp_path: Path) -> None:
    path = tmp_path / "long.ndjson"
    path.write_bytes(b'{"x": "' + b"y" * 50_000 + b'"}\n{"external_id": "after"}\n')
    records = _read(path)
    assert len(records) == 2
    assert "longer than 10000 bytes" in records[0].errors[0].message
    assert records[1].line == 2 and records[1].profile == {"external_id": "after"}


def test_csv_mapping_covers_every_column_kind(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    header = (
        "external_id,email,phone,country_code,first_name,tags,attributes.tier,"
        "attributes.visits:number,attributes.vip:bool,identities.shopify_id,"
        "consents.email,consents.sms,address.city,address.postcode,address.is_default"
    )
    row = (
        "c-1,Ann@Example.com,0412 345 678,AU,Ann, gold ; vip ;,gold,12,yes,S-9,true,0,Sydney,2000,1"
    )
    empty = "c-2,,,,,,,,,,,,,,"
    path.write_text(f"\ufeff{header}\n{row}\n{empty}\n", encoding="utf-8")
    first, second = _read(path, "csv")
    assert first.errors == [] and first.line == 2
    assert first.profile == {
        "external_id": "c-1",
        "email": "Ann@Example.com",
        "phone": "0412 345 678",
        "country_code": "AU",
        "first_name": "Ann",
        "tags": ["gold", "vip"],
        "attributes": {"tier": "gold", "visits": 12, "vip": True},
        "identities": {"shopify_id": "S-9"},
        "consents": {"email": True, "sms": False},
        "addresses": [{"city": "Sydney", "postcode": "2000", "is_default": True}],
    }
    assert first.source["email"] == "Ann@Example.com"  # the row as the file has it
    # Empty cells are absent fields, not empty strings.
    assert second.profile == {"external_id": "c-2"} and second.line == 3


def test_csv_cells_that_cannot_convert_are_field_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "external_id,consents.sms,attributes.n:number,address.is_default\n"
        "x,maybe,12abc,perhaps\n"
        "y,true,1.5,false,extra\n"
    )
    first, second = _read(path, "csv")
    assert {e.path for e in first.errors} == {
        "consents.sms",
        "attributes.n",
        "addresses[0].is_default",
    }
    assert "expected true or false" in first.errors[0].message
    assert second.errors[0].path == "$" and "5 cells" in second.errors[0].message
    assert second.source["_extra_cells"] == ["extra"]


def test_csv_line_numbers_follow_quoted_newlines_and_resume_reads_the_header(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        'external_id,title\r\na,"two\nlines"\r\n\r\nb,plain\r\nc,last\r\n', encoding="utf-8"
    )
    records = _read(path, "csv")
    assert [(r.line, r.profile) for r in records] == [
        (2, {"external_id": "a", "title": "two\nlines"}),
        (5, {"external_id": "b", "title": "plain"}),
        (6, {"external_id": "c", "title": "last"}),
    ]
    tail = _read(path, "csv", records[0].end_offset, records[0].next_line)
    assert [(r.line, r.profile) for r in tail] == [(r.line, r.profile) for r in records[1:]]


def test_csv_bad_utf8_is_a_rejected_row(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"external_id,first_name\nok,Ann\nbad,\xff\xfe\n")
    ok, bad = _read(path, "csv")
    assert ok.errors == [] and bad.profile is None and bad.errors[0].message == "not valid UTF-8"


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("external_id,emial\n", "unknown column 'emial'"),
        ("external_id,attributes.n:date\n", "unknown column"),
        ("external_id,tags,tags\n", "appears twice"),
        ("email\n", "no external_id column"),
        ("", "empty"),
    ],
)
def test_a_bad_csv_header_stops_before_any_row(tmp_path: Path, header: str, problem: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(header + "x,y\n" if header else "")
    with pytest.raises((MappingError, ReadError), match=problem):
        _read(path, "csv")


def test_format_from_extension_or_flag() -> None:
    assert detect_format(Path("a.JSONL"), None) == "ndjson"
    assert detect_format(Path("a.csv"), None) == "csv"
    assert detect_format(Path("a.txt"), "csv") == "csv"
    with pytest.raises(ReadError, match="--format"):
        detect_format(Path("a.txt"), None)


def test_an_overlong_csv_line_is_one_rejected_record_read_in_bounded_memory(
    tmp_path: Path,
) -> None:
    path = tmp_path / "long.csv"
    with path.open("wb") as f:
        f.write(b"external_id,first_name\na,Ann\nb,")
        for _ in range(60):  # a 60 MB line
            f.write(b"y" * 1_000_000)
        f.write(b"\nc,Cy\n")
    tracemalloc.start()
    try:
        records = list(open_records(path, "csv", 0, 1, 100_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"peak {peak} bytes"
    assert [r.line for r in records] == [2, 3, 4]
    assert records[0].profile == {"external_id": "a", "first_name": "Ann"}
    bad = records[1]
    assert bad.profile is None
    assert bad.errors[0].message == "line 3 is longer than 100000 bytes"
    assert bad.end_offset == records[2].end_offset - len(b"c,Cy\n")
    assert records[2].profile == {"external_id": "c", "first_name": "Cy"}
    # Resuming after the long line starts at the next row.
    tail = list(open_records(path, "csv", bad.end_offset, bad.next_line, 100_000))
    assert [r.line for r in tail] == [4]


def test_an_overlong_csv_header_stops_the_import(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes(b"external_id," + b"x" * 200_000 + b"\na,b\n")
    with pytest.raises(ReadError, match=r"header \(line 1\) is longer than 100000 bytes"):
        open_records(path, "csv", 0, 1, 100_000)
