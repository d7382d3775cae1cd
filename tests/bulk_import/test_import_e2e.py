"""`gateway import` against a real gateway over HTTP: killed, interrupted, resumed.

The gateway runs in this process under uvicorn; the importer runs as a real
`gateway import` subprocess. A tripwire in front of the gateway signals the
importer while the gateway answers a chunk it has already committed, so the
run is cut at a known, reproducible point: the resumed run must send that
chunk again and the gateway must answer it as a replay.
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.__main__ import main
from gateway.app import create_app
from gateway.bulk_import import checkpoint as cp_file
from gateway.bulk_import.runner import Options, run
from gateway.config import Settings
from tests.conftest import TOKEN
from tests.servers import serve
from tests.tokens import entry as token_entry


class Tripwire:
    """Sends `sig` to the importer as the gateway starts its `after`-th 202 to
    a batch, before the importer can read it; for SIGKILL it waits until the
    importer is gone, so that answer is certainly lost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.victim: subprocess.Popen[bytes] | None = None
        self.after = 0
        self.sig = signal.SIGKILL
        self.batches = 0
        self.fired = threading.Event()

    def arm(self, victim: subprocess.Popen[bytes], after: int, sig: signal.Signals) -> None:
        self.victim, self.after, self.sig, self.batches = victim, after, sig, 0
        self.fired.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/profiles/batch":
            await self.app(scope, receive, send)
            return

        async def tripped(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 202:
                self.batches += 1
                if self.victim is not None and self.batches == self.after:
                    self.victim.send_signal(self.sig)
                    if self.sig == signal.SIGKILL:
                        self.victim.wait(timeout=10)
                    self.victim = None
                    self.fired.set()
            await send(message)

        await self.app(scope, receive, tripped)


@contextmanager
def gateway(settings: Settings) -> Iterator[tuple[str, Tripwire]]:
    wire = Tripwire(create_app(settings))
    with serve(wire) as base:
        yield base, wire


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
        api_tokens=token_entry("crm", TOKEN),
        import_batch_url="http://127.0.0.1:9",
        dispatcher_enabled=False,
        **extra,
    )


def _query(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(tmp_path / "gateway.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _importer(tmp_path: Path, path: Path, base: str, *args: str) -> subprocess.Popen[bytes]:
    out = (tmp_path / "import.out").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "import", str(path), "--url", base, "-q", *args],
        cwd=tmp_path,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "GATEWAY_BACKFILL_TOKEN": TOKEN},
    )


def _output(tmp_path: Path) -> str:
    return (tmp_path / "import.out").read_text()


# Bad rows of the generated NDJSON file: line -> (line text, expected error paths).
BAD_LINES: dict[int, tuple[str, list[str]]] = {
    3: ("{not json", ["$"]),
    1_500: ('{"external_id": "x-1500", "email": "no-at-sign"}', ["email"]),
    31_234: ('{"email": "x@example.com"}', ["external_id"]),
    50_000: ('{"external_id": "x-50000", "phone": "12"}', ["phone"]),
    77_777: ('{"external_id": "x-77777", "tags": ["a", 7]}', ["tags[1]"]),
    99_999: ("[1, 2, 3]", ["$"]),
}


def _write_ndjson(path: Path, rows: int) -> int:
    """`rows` lines, `BAD_LINES` among them; returns how many are good."""
    with path.open("w") as f:
        for line in range(1, rows + 1):
            bad = BAD_LINES.get(line)
            if bad is not None:
                f.write(bad[0] + "\n")
                continue
            f.write(
                f'{{"external_id": "p-{line}", "email": "user{line}@example.com", '
                f'"first_name": "Ann", "attributes": {{"tier": "gold", "n": {line}}}}}\n'
            )
    return rows - len(BAD_LINES)


def _metric(base: str, outcome: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    prefix = f'gateway_inbound_requests_total{{app="crm",outcome="{outcome}"}} '
    values = [float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


def test_a_100k_row_import_killed_mid_run_resumes_and_stores_each_row_once(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    data = tmp_path / "profiles.ndjson"
    good = _write_ndjson(data, 100_000)
    checkpoint = tmp_path / "profiles.ndjson.import-checkpoint.json"
    with gateway(_settings(tmp_path)) as (base, wire):
        proc = _importer(tmp_path, data, base)
        wire.arm(proc, after=30, sig=signal.SIGKILL)
        assert proc.wait(timeout=120) == -signal.SIGKILL, _output(tmp_path)
        assert wire.fired.wait(timeout=10)

        cut = cp_file.load(checkpoint)
        assert cut is not None and not cut.complete
        assert 0 < cut.offset < data.stat().st_size
        stored_requests = _query(tmp_path, "SELECT COUNT(*) FROM requests")[0][0]
        # The chunk whose answer was lost is stored but not in the checkpoint.
        assert stored_requests > cut.counts.chunks

        proc = _importer(tmp_path, data, base)
        assert proc.wait(timeout=120) == 1, _output(tmp_path)  # 1: some rows rejected
        output = _output(tmp_path)
        assert f"skipping {cut.counts.rows_read:,} rows" in output
        assert "answered as replays" in output
        assert _metric(base, "replayed") >= 1

    writes, people = _query(
        tmp_path, "SELECT COUNT(*), COUNT(DISTINCT external_id) FROM profile_writes"
    )[0]
    assert writes == people == good
    # 100 chunks of 1000 lines, each stored by exactly one request.
    assert _query(tmp_path, "SELECT COUNT(*) FROM requests")[0][0] == 100

    errors = [
        msgspec.json.decode(line)
        for line in (tmp_path / "profiles.ndjson.errors.ndjson").read_bytes().splitlines()
    ]
    assert [e["line"] for e in errors] == sorted(BAD_LINES)
    for entry in errors:
        assert [e["path"] for e in entry["errors"]] == BAD_LINES[entry["line"]][1]
    assert errors[1]["row"] == {"external_id": "x-1500", "email": "no-at-sign"}
    assert errors[0]["row"] == "{not json"

    done = cp_file.load(checkpoint)
    assert done is not None and done.complete
    assert done.counts.rows_read == 100_000 and done.counts.accepted == good
    assert done.counts.rejected == len(BAD_LINES) and done.counts.replayed >= 999
    print(f"100k-row kill-and-resume import: {time.monotonic() - started:.1f} s")


CSV_HEADER = (
    "external_id,email,first_name,last_name,country_code,tags,attributes.tier,"
    "attributes.visits:number,attributes.vip:bool,identities.shop_id,consents.email,"
    "consents.sms,address.city,address.postcode,address.country,address.is_default"
)


def test_a_csv_import_stopped_with_ctrl_c_resumes_where_it_stopped(tmp_path: Path) -> None:
    data = tmp_path / "crm.csv"
    with data.open("w") as f:
        f.write(CSV_HEADER + "\n")
        for i in range(3000):
            vip = "yes" if i % 2 else "no"
            sms = "maybe" if i == 2500 else "false"  # line 2502: not a yes/no value
            f.write(
                f"c-{i},c{i}@example.com,Ann,Lee,AU,gold;new,gold,{i},{vip},S-{i},true,{sms},"
                f"Sydney,2000,AU,true\n"
            )
    with gateway(_settings(tmp_path)) as (base, wire):
        proc = _importer(tmp_path, data, base, "--batch-size", "100", "--concurrency", "2")
        wire.arm(proc, after=5, sig=signal.SIGINT)
        assert proc.wait(timeout=60) == 130, _output(tmp_path)
        assert "interrupted; run the same command again to resume" in _output(tmp_path)
        cut = cp_file.load(tmp_path / "crm.csv.import-checkpoint.json")
        assert cut is not None and 500 <= cut.counts.rows_read < 3000

        proc = _importer(tmp_path, data, base, "--batch-size", "100", "--concurrency", "2")
        assert proc.wait(timeout=60) == 1, _output(tmp_path)
        assert f"skipping {cut.counts.rows_read:,} rows" in _output(tmp_path)

    assert _query(tmp_path, "SELECT COUNT(DISTINCT external_id), COUNT(*) FROM profile_writes")[
        0
    ] == (2999, 2999)
    body = _query(tmp_path, "SELECT body FROM profile_writes WHERE external_id = 'c-7'")[0][0]
    assert msgspec.json.decode(body) == {
        "external_id": "c-7",
        "email": "c7@example.com",
        "first_name": "Ann",
        "last_name": "Lee",
        "country_code": "AU",
        "tags": ["gold", "new"],
        "identities": {"shop_id": "S-7"},
        "attributes": {"tier": "gold", "visits": 7, "vip": True},
        "consents": {"email": True, "sms": False},
        "addresses": [{"city": "Sydney", "postcode": "2000", "country": "AU", "is_default": True}],
    }
    (entry,) = [
        msgspec.json.decode(line)
        for line in (tmp_path / "crm.csv.errors.ndjson").read_bytes().splitlines()
    ]
    assert entry["line"] == 2502 and entry["errors"][0]["path"] == "consents.sms"
    assert entry["row"]["external_id"] == "c-2500"


def test_rows_the_gateway_refuses_are_mapped_back_to_their_lines(tmp_path: Path) -> None:
    data = tmp_path / "p.ndjson"
    too_many = {f"a{i}": i for i in range(101)}  # Ocamba's limit is 100 custom properties
    rows: list[dict[str, Any]] = [{"external_id": f"o-{i}"} for i in range(10)]
    rows[4]["attributes"] = too_many
    data.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in rows))
    out, err = io.StringIO(), io.StringIO()
    opts = Options(
        path=data,
        format="ndjson",
        token=TOKEN,
        batch_size=4,
        errors_path=tmp_path / "errors.ndjson",
        checkpoint_path=tmp_path / "cp.json",
        quiet=True,
    )
    settings = _settings(tmp_path, ocamba_url="http://127.0.0.1:9")
    with gateway(settings) as (base, _):
        opts = dataclasses.replace(opts, url=base)
        assert run(opts, out=out, err=err) == 1, err.getvalue()
        ids = [r[0] for r in _query(tmp_path, "SELECT external_id FROM profile_writes")]
        assert sorted(ids) == sorted(f"o-{i}" for i in range(10) if i != 4)
        (entry,) = [msgspec.json.decode(x) for x in opts.errors_path.read_bytes().splitlines()]
        assert entry["line"] == 5 and entry["errors"][0]["path"] == "attributes"
        assert "at most 100" in entry["errors"][0]["message"]
        assert "accepted                9" in out.getvalue()

        # Done is done: the same command again sends nothing.
        assert run(opts, out=out, err=err) == 1
        assert "imported completely already" in err.getvalue()
        # A file that changed since cannot be resumed from the checkpoint.
        with data.open("ab") as f:
            f.write(b'{"external_id": "late"}\n')
        assert run(opts, out=out, err=err) == 2
        assert "the file changed" in err.getvalue()
    assert _query(tmp_path, "SELECT COUNT(*) FROM requests")[0][0] == 3


def test_usage_errors_exit_2_without_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GATEWAY_BACKFILL_TOKEN", raising=False)
    data = tmp_path / "p.ndjson"
    data.write_text('{"external_id": "a"}\n')
    assert main(["import", str(data), "-q"]) == 2
    assert "no token" in capsys.readouterr().err
    assert not (tmp_path / "p.ndjson.import-checkpoint.json").exists()
    assert main(["import", str(tmp_path / "p.txt")]) == 2
    assert main(["import", str(data), "--targets", "nowhere"]) == 2
    assert main(["import", str(data), "--url", "gateway:8080"]) == 2
    bad_csv = tmp_path / "p.csv"
    bad_csv.write_text("external_id,emial\nx,y\n")
    assert main(["import", str(bad_csv), "--validate-only", "-q"]) == 2
    assert "unknown column 'emial'" in capsys.readouterr().err


def test_validate_only_checks_the_file_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "p.ndjson"
    data.write_text('{"external_id": "a"}\n{"external_id": "b", "email": "nope"}\n')
    assert main(["import", str(data), "--validate-only", "-q", "--url", "http://127.0.0.1:9"]) == 1
    assert "validation finished" in capsys.readouterr().out
    (entry,) = (tmp_path / "p.ndjson.validation-errors.ndjson").read_text().splitlines()
    assert '"line":2' in entry
    assert not (tmp_path / "p.ndjson.import-checkpoint.json").exists()
