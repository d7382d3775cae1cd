"""Run one import: start or resume it, drive the send loop, report how it went.

Starting checks the file and the options against the checkpoint a previous run
left (a resume must read the same file the same way), or writes a fresh one.
The chunks are sent and checkpointed by `send_loop`; the rejected rows go to
`errors_file`; what is said at the end is the summary plus a hint to resume.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx

from gateway.bulk_import import checkpoint as cp_file
from gateway.bulk_import.checkpoint import Checkpoint, CheckpointError, FileIdentity
from gateway.bulk_import.chunks import Chunk, make_chunks
from gateway.bulk_import.client import Retry
from gateway.bulk_import.csv_mapping import MappingError
from gateway.bulk_import.errors_file import ErrorsFile
from gateway.bulk_import.progress import Progress
from gateway.bulk_import.readers import Format, ReadError, open_records
from gateway.bulk_import.send_loop import SendLoop
from gateway.bulk_import.summary import render
from gateway.schema import Lane

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, kw_only=True)
class Options:
    path: Path
    format: Format
    url: str = "http://127.0.0.1:8080"
    token: str = ""
    targets: list[str] | None = None
    priority: Lane = "bulk"
    batch_size: int = 1000
    max_body_bytes: int = 4_000_000
    concurrency: int = 4
    errors_path: Path
    checkpoint_path: Path
    restart: bool = False
    quiet: bool = False
    validate_only: bool = False
    timeout: float = 60.0
    progress_interval: float | None = None


def _mismatch(cp: Checkpoint, identity: FileIdentity, opts: Options) -> str | None:
    if cp.file != identity:
        return (
            "the file changed since the checkpoint was written (size, modification time or "
            "its first 64 KiB differ)"
        )
    for name, ours, theirs in (
        ("--format", opts.format, cp.format),
        ("--batch-size", opts.batch_size, cp.batch_size),
        ("--max-body-bytes", opts.max_body_bytes, cp.max_body_bytes),
        ("--targets", opts.targets, cp.targets),
        # A checkpoint from before --priority records none: it keeps sending none.
        ("--priority", opts.priority, cp.priority or opts.priority),
    ):
        if ours != theirs:
            return f"{name} is {ours} but the checkpoint was made with {theirs}"
    return None


class Importer:
    def __init__(
        self,
        opts: Options,
        *,
        out: TextIO,
        err: TextIO,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.opts = opts
        self.out = out
        self.err = err
        self.transport = transport
        self.retry = retry

    def say(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    async def run(self) -> int:
        opts = self.opts
        try:
            identity = cp_file.identify(opts.path)
        except OSError as exc:
            self.say(f"gateway import: cannot read {opts.path}: {exc.strerror}")
            return EXIT_ERROR
        if opts.validate_only:
            cp = self._fresh(identity)
            return await self._go(cp, send=False)
        try:
            found = None if opts.restart else cp_file.load(opts.checkpoint_path)
        except CheckpointError as exc:
            self.say(f"gateway import: {exc}")
            return EXIT_ERROR
        if found is not None:
            problem = _mismatch(found, identity, opts)
            if problem is not None:
                self.say(
                    f"gateway import: cannot resume from {opts.checkpoint_path}: {problem}. "
                    "Run with the same file and options, or pass --restart to import it all "
                    "again (rows already sent would then be sent a second time)."
                )
                return EXIT_ERROR
            if found.complete:
                self.say(f"{opts.path} was imported completely already; --restart imports it again")
                self._summary("import already complete", found, skipped=0, rows=0, elapsed=None)
                return EXIT_REJECTED if found.counts.rejected else EXIT_OK
        if not opts.token:
            self.say("gateway import: no token; set GATEWAY_BACKFILL_TOKEN or pass --token-file")
            return EXIT_ERROR
        cp = found or self._fresh(identity)
        if found is None:
            try:
                cp_file.save(opts.checkpoint_path, cp)
            except OSError as exc:
                self.say(f"gateway import: cannot write {opts.checkpoint_path}: {exc.strerror}")
                return EXIT_ERROR
        return await self._go(cp, send=True)

    def _fresh(self, identity: FileIdentity) -> Checkpoint:
        opts = self.opts
        return Checkpoint(
            run_id=uuid.uuid4().hex,
            file=identity,
            format=opts.format,
            batch_size=opts.batch_size,
            max_body_bytes=opts.max_body_bytes,
            targets=opts.targets,
            priority=opts.priority,
        )

    async def _go(self, cp: Checkpoint, *, send: bool) -> int:
        opts = self.opts
        try:
            records = open_records(
                opts.path, opts.format, cp.offset, cp.next_line, opts.max_body_bytes
            )
        except (ReadError, MappingError) as exc:
            self.say(f"gateway import: {exc}")
            return EXIT_ERROR
        except OSError as exc:
            self.say(f"gateway import: cannot read {opts.path}: {exc.strerror}")
            return EXIT_ERROR
        skipped = cp.counts.rows_read
        if skipped:
            self.say(
                f"resuming from {opts.checkpoint_path}: skipping {skipped:,} rows "
                f"(lines 1-{cp.next_line - 1:,}) the gateway already acknowledged"
            )
        errors = ErrorsFile(opts.errors_path, cp.errors_bytes)
        progress = Progress(
            self.err,
            total_bytes=cp.file.size,
            start_bytes=cp.offset,
            start_rows=skipped,
            enabled=not opts.quiet,
            interval=opts.progress_interval,
        )
        chunks = make_chunks(
            records,
            batch_size=cp.batch_size,
            max_body_bytes=cp.max_body_bytes,
            targets=cp.targets,
            priority=cp.priority,
        )
        started = time.monotonic()
        code = EXIT_ERROR
        try:
            code = await self._pump(cp, chunks, errors, progress, send=send)
        finally:
            progress.close()
            errors.close()
            records_close = getattr(records, "close", None)
            if records_close is not None:
                records_close()
        elapsed = time.monotonic() - started
        rows = cp.counts.rows_read - skipped
        title = {EXIT_INTERRUPTED: "import interrupted", EXIT_ERROR: "import stopped"}.get(
            code, "import finished" if send else "validation finished"
        )
        self._summary(title, cp, skipped=skipped, rows=rows, elapsed=elapsed)
        if code == EXIT_INTERRUPTED:
            self.say("interrupted; run the same command again to resume")
        elif code == EXIT_ERROR and send:
            self.say("what the gateway acknowledged is checkpointed; run again to resume")
        return code

    def _summary(
        self, title: str, cp: Checkpoint, *, skipped: int, rows: int, elapsed: float | None
    ) -> None:
        errors_path = self.opts.errors_path if cp.counts.rejected else None
        text = render(
            sent=not self.opts.validate_only,
            title=f"{title}: {self.opts.path}",
            counts=cp.counts,
            skipped=skipped,
            rows_this_run=rows,
            elapsed=elapsed,
            errors_path=errors_path,
        )
        print(text, file=self.out, flush=True)

    async def _pump(
        self,
        cp: Checkpoint,
        chunks: Iterator[Chunk],
        errors: ErrorsFile,
        progress: Progress,
        *,
        send: bool,
    ) -> int:
        opts = self.opts
        loop = SendLoop(
            url=opts.url,
            token=opts.token,
            timeout=opts.timeout,
            concurrency=opts.concurrency,
            checkpoint_path=opts.checkpoint_path,
            say=self.say,
            transport=self.transport,
            retry=self.retry,
        )
        ending = await loop.run(cp, chunks, errors, progress, send=send)
        if ending == "stopped":
            return EXIT_ERROR
        if ending == "interrupted":
            return EXIT_INTERRUPTED
        progress.update(cp.offset, cp.counts.rows_read, cp.counts.rejected, force=True)
        if send:
            cp.complete = True
            cp_file.save(opts.checkpoint_path, cp)
        return EXIT_REJECTED if cp.counts.rejected else EXIT_OK


def run(
    opts: Options,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: Retry | None = None,
) -> int:
    async def main() -> int:
        importer = Importer(
            opts, out=out or sys.stdout, err=err or sys.stderr, transport=transport, retry=retry
        )
        return await importer.run()

    return asyncio.run(main())
