"""The benchmark's quick mode still runs end to end and fills every part.

No timing is asserted: on a shared CI machine the figures mean nothing. What
rots is the plumbing (a renamed setting, a changed route, a part that no
longer starts), and that shows here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

ROOT = Path(__file__).resolve().parents[1]
# Rows name their part with its number first ("2 single POST").
PARTS = (
    "accept",
    "single_post",
    "drain",
    "rate_use",
    "call_efficiency",
    "memory",
    "end_to_end",
    "confirm",
    "budget",
)


def test_quick_run_fills_every_part(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: `apt-get install wrk` (./scripts/test installs it)")
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-5000:]}"

    results = msgspec.json.decode(out.read_bytes())
    meta = results["meta"]
    assert meta["quick"] is True
    assert meta["cores"] >= 1 and meta["cpu_model"] and meta["python"]
    rows = results["rows"]
    for number, part in enumerate(PARTS, 1):
        mine = [r for r in rows if r["part"].split()[0] == str(number)]
        assert mine, f"no rows for part {number} ({part})"
        for row in mine:
            assert row["metric"] not in ("not available", "error"), row
            value = row["value"]
            assert isinstance(value, int | float) and not isinstance(value, bool), row
    # The table went to stdout, one line per row.
    assert all(r["metric"] in proc.stdout for r in rows)


@pytest.mark.parametrize("part", ["end_to_end", "confirm", "budget"])
def test_part_runs_alone_and_prints_its_figures(part: str) -> None:
    """`bench/<part>.py --quick` on its own prints one JSON row per figure."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{part}.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-5000:]}"
    rows = [msgspec.json.decode(line) for line in proc.stdout.splitlines()]
    metrics = {r["metric"] for r in rows}
    expected = {
        "end_to_end": {
            "ceiling: direct post to the fakes",
            "gateway on sqlite, delivered",
            "gateway on sqlite / direct post",
            "gateway on postgres, delivered",
            "gateway on postgres / direct post",
        },
        "confirm": {
            "gateway, webhooks confirmed",
            "ceiling: bare Starlette answering the same posts",
            "gateway / ceiling",
        },
        "budget": {
            "(a) re-sync, ocamba: profiles re-sent, naive forwarder",
            "(a) re-sync, omneo: profiles re-sent, today (resend: true)",
            "(a) re-sync, import_batch: profiles re-sent, gateway",
            "(b) 10 updates x 20: import calls per person, today (resend: true)",
            "(b) 10 updates x 20: import calls per person, gateway",
            "(b) 10 updates x 20: import calls per person, naive forwarder",
            "(b) seconds until every last update is in Ocamba, gateway",
            "(c) real-time write to Ocamba p99, gateway (backfill priority bulk)",
            "(c) real-time write to Ocamba p99, one lane (backfill without priority)",
        },
    }[part]
    assert expected <= metrics, metrics
    for row in rows:
        value = row["value"]
        assert isinstance(value, int | float) and not isinstance(value, bool), row
    if part != "budget":  # its baselines lose updates on purpose (the naive forwarder)
        # Every delivery got where it was going (no timing: only that the run finished).
        assert "NOT" not in proc.stdout, proc.stdout
