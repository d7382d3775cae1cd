"""A progress bar on stderr: percent by bytes, rows, rows/s and ETA.

The total is the file's size, never a line count: counting the lines of a
10-million-line file first would read it twice. On a terminal the bar redraws
in place; into a file or a CI log it prints a plain line now and then instead.
Only counts are shown, never a row's content.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

_WIDTH = 24


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    def __init__(
        self,
        stream: TextIO,
        *,
        total_bytes: int,
        start_bytes: int,
        start_rows: int,
        enabled: bool = True,
        tty: bool | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._total = max(total_bytes, 1)
        self._start_bytes = start_bytes
        self._start_rows = start_rows
        self._enabled = enabled
        self._tty = stream.isatty() if tty is None else tty
        self._interval = interval if interval is not None else (0.2 if self._tty else 10.0)
        self._clock = clock
        self._started = clock()
        self._last_draw = self._started
        self._drawn = False

    def line(self, done_bytes: int, rows: int, rejected: int) -> str:
        elapsed = max(self._clock() - self._started, 1e-9)
        fraction = min(done_bytes / self._total, 1.0)
        filled = int(fraction * _WIDTH)
        rate = (rows - self._start_rows) / elapsed
        byte_rate = (done_bytes - self._start_bytes) / elapsed
        eta = "--:--" if byte_rate <= 0 else _duration((self._total - done_bytes) / byte_rate)
        bar = "#" * filled + "." * (_WIDTH - filled)
        text = f"{fraction * 100:5.1f}% [{bar}] {rows:,} rows  {rate:,.0f} rows/s  ETA {eta}"
        return text + (f"  rejected {rejected:,}" if rejected else "")

    def update(self, done_bytes: int, rows: int, rejected: int, *, force: bool = False) -> None:
        if not self._enabled:
            return
        now = self._clock()
        if not force and now - self._last_draw < self._interval:
            return
        self._last_draw = now
        text = self.line(done_bytes, rows, rejected)
        if self._tty:
            self._stream.write("\r\x1b[2K" + text)
            self._drawn = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Ends the bar's line so what follows starts on a fresh one."""
        if self._enabled and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
