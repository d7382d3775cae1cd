"""The checkpoint file: atomic replacement and pinning the input file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.bulk_import import checkpoint as cp_file
from gateway.bulk_import.checkpoint import Checkpoint, CheckpointError, Counts


def _checkpoint(tmp_path: Path, offset: int = 0) -> Checkpoint:
    data = tmp_path / "in.ndjson"
    if not data.exists():
        data.write_text('{"external_id": "a"}\n')
    return Checkpoint(
        run_id="r1",
        file=cp_file.identify(data),
        format="ndjson",
        batch_size=1000,
        max_body_bytes=4_000_000,
        offset=offset,
        counts=Counts(rows_read=offset),
    )


def test_save_and_load_round_trip_without_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    assert cp_file.load(path) is None
    cp = _checkpoint(tmp_path, offset=42)
    cp_file.save(path, cp)
    assert cp_file.load(path) == cp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp.json", "in.ndjson"]


def test_a_failed_save_leaves_the_previous_checkpoint_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cp.json"
    cp_file.save(path, _checkpoint(tmp_path, offset=10))

    def crash(src: object, dst: object) -> None:
        raise OSError("power cut before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        cp_file.save(path, _checkpoint(tmp_path, offset=20))
    loaded = cp_file.load(path)
    assert loaded is not None and loaded.offset == 10


def test_a_garbled_checkpoint_says_how_to_start_over(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    path.write_text('{"version": 1, "run_id": ')
    with pytest.raises(CheckpointError, match="--restart"):
        cp_file.load(path)


def test_the_identity_changes_when_the_file_does(tmp_path: Path) -> None:
    data = tmp_path / "in.ndjson"
    data.write_text('{"external_id": "a"}\n')
    before = cp_file.identify(data)
    assert cp_file.identify(data) == before
    with data.open("a") as f:
        f.write('{"external_id": "b"}\n')
    assert cp_file.identify(data) != before
