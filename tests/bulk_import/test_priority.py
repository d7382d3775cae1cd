"""`gateway import` asks for the bulk lane unless `--priority realtime`, and a
resumed run keeps asking for what its checkpoint recorded."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import msgspec
import pytest

from gateway.__main__ import build_parser, main
from gateway.bulk_import import checkpoint as cp_file
from gateway.bulk_import.chunks import Chunk
from gateway.bulk_import.runner import Options, run
from gateway.schema import BatchWrite
from tests.bulk_import.test_import_e2e import _query, _settings, gateway
from tests.conftest import TOKEN


def _options(tmp_path: Path, rows: int = 5, **extra: object) -> Options:
    data = tmp_path / "p.ndjson"
    data.write_text("".join(f'{{"external_id": "p-{i}"}}\n' for i in range(rows)))
    opts = Options(
        path=data,
        format="ndjson",
        token=TOKEN,
        batch_size=2,
        errors_path=tmp_path / "errors.ndjson",
        checkpoint_path=tmp_path / "cp.json",
        quiet=True,
    )
    return dataclasses.replace(opts, **extra)  # type: ignore[arg-type]


def test_the_command_line_says_bulk_unless_told_otherwise(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    assert parser.parse_args(["import", "f.ndjson"]).priority == "bulk"
    assert parser.parse_args(["import", "f.ndjson", "--priority", "realtime"]).priority == (
        "realtime"
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["import", "f.ndjson", "--priority", "urgent"])
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    assert "--priority {realtime,bulk}" in capsys.readouterr().out


def test_the_body_names_the_lane() -> None:
    chunk = Chunk(0, 1, 1, 2, 10, profiles=[b'{"external_id":"a"}'])
    body = chunk.body(["omneo"], None, "bulk")
    assert body.endswith(b'"priority":"bulk"}')
    decoded = msgspec.json.decode(body, type=BatchWrite)
    assert (decoded.priority, decoded.targets) == ("bulk", ["omneo"])
    assert b"priority" not in chunk.body(None)


def test_an_import_is_stored_in_the_bulk_lane_by_default(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with gateway(_settings(tmp_path)) as (base, _):
        assert run(_options(tmp_path, url=base), out=out, err=err) == 0, err.getvalue()
    assert _query(tmp_path, "SELECT DISTINCT lane, resend FROM requests") == [("bulk", 0)]
    assert _query(tmp_path, "SELECT COUNT(*) FROM profile_writes") == [(5,)]
    assert msgspec.json.decode((tmp_path / "cp.json").read_bytes())["priority"] == "bulk"


def test_priority_realtime_sends_the_import_as_an_app_would(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with gateway(_settings(tmp_path)) as (base, _):
        opts = _options(tmp_path, url=base, priority="realtime")
        assert run(opts, out=out, err=err) == 0, err.getvalue()
    assert _query(tmp_path, "SELECT DISTINCT lane FROM requests") == [("realtime",)]


def test_a_resumed_run_keeps_the_lane_of_its_checkpoint(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    opts = _options(tmp_path)
    identity = cp_file.identify(opts.path)
    made = cp_file.Checkpoint(
        run_id="r1", file=identity, format="ndjson", batch_size=2, max_body_bytes=4_000_000
    )
    # Made with bulk: resuming with realtime would change the bodies of its keys.
    cp_file.save(opts.checkpoint_path, msgspec.structs.replace(made, priority="bulk"))
    with gateway(_settings(tmp_path)) as (base, _):
        opts = dataclasses.replace(opts, url=base, priority="realtime")
        assert run(opts, out=out, err=err) == 2
        assert "--priority is realtime but the checkpoint was made with bulk" in err.getvalue()
        # A checkpoint from before --priority: its batches named no lane, and go on so.
        cp_file.save(opts.checkpoint_path, made)
        assert run(dataclasses.replace(opts, priority="bulk"), out=out, err=err) == 0
    assert _query(tmp_path, "SELECT DISTINCT lane FROM requests") == [("realtime",)]
