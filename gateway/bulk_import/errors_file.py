"""The errors file: one NDJSON line per rejected row, in file order.

Created on first use and readable by its owner only, because it holds the rows
as given. On resume it is cut back to the size the checkpoint recorded: lines
past it belong to chunks that will be read, and rejected, again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import msgspec

from gateway.bulk_import.chunks import Rejection


class ErrorsFile:
    def __init__(self, path: Path, keep_bytes: int) -> None:
        self.path = path
        self._f: BinaryIO | None = None
        self.size = keep_bytes
        if keep_bytes == 0:
            path.unlink(missing_ok=True)
        elif path.exists():
            # Lines past the checkpoint belong to chunks that will be read again.
            os.truncate(path, min(keep_bytes, path.stat().st_size))
            self.size = path.stat().st_size

    def write(self, rejections: list[Rejection]) -> None:
        if not rejections:
            return
        if self._f is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._f = os.fdopen(fd, "ab")
        for r in sorted(rejections, key=lambda r: r.line):
            line = {"line": r.line, "errors": r.errors, "row": r.row}
            data = msgspec.json.encode(line) + b"\n"
            self._f.write(data)
            self.size += len(data)
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
