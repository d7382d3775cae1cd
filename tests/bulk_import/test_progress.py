"""The progress line: percent by bytes, rate, ETA; plain lines off a terminal."""

from __future__ import annotations

import io

from gateway.bulk_import.progress import Progress


def test_rate_and_eta_come_from_this_runs_progress() -> None:
    now = [100.0]
    out = io.StringIO()
    bar = Progress(
        out, total_bytes=1000, start_bytes=200, start_rows=2000, tty=False, clock=lambda: now[0]
    )
    now[0] = 110.0  # 10 s for 300 bytes and 3000 rows: 500 bytes are left
    line = bar.line(500, 5000, 3)
    assert line.startswith(" 50.0% [############............] 5,000 rows")
    assert "300 rows/s" in line and "ETA 0:16" in line and "rejected 3" in line


def test_off_a_terminal_it_prints_a_line_per_interval() -> None:
    now = [0.0]
    out = io.StringIO()
    bar = Progress(
        out,
        total_bytes=100,
        start_bytes=0,
        start_rows=0,
        tty=False,
        interval=5,
        clock=lambda: now[0],
    )
    for t in range(12):
        now[0] = float(t)
        bar.update(t, t, 0)
    bar.close()
    assert out.getvalue().count("\n") == 2 and "\r" not in out.getvalue()


def test_on_a_terminal_it_redraws_in_place_and_quiet_draws_nothing() -> None:
    out = io.StringIO()
    bar = Progress(out, total_bytes=100, start_bytes=0, start_rows=0, tty=True, interval=0)
    bar.update(50, 5, 0)
    bar.update(100, 10, 0)
    bar.close()
    assert out.getvalue().count("\r") == 2 and out.getvalue().endswith("\n")
    silent = io.StringIO()
    Progress(silent, total_bytes=1, start_bytes=0, start_rows=0, enabled=False).update(
        1, 1, 0, force=True
    )
    assert silent.getvalue() == ""
