"""Run one import: read, validate, send chunks concurrently, checkpoint in order.

Several chunks are in flight at once, but the checkpoint only moves over the
contiguous prefix of acknowledged chunks, and each chunk's rejections reach
the errors file in that same order: a resumed run starts right after the last
chunk the gateway is known to hold, and re-sends at worst the chunks that
were in flight, which the gateway answers from its idempotency record.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import httpx
import msgspec

from gateway.bulk_import import checkpoint as cp_file
from gateway.bulk_import.checkpoint import Checkpoint, CheckpointError, Counts, FileIdentity
from gateway.bulk_import.chunks import Chunk, Rejection, idempotency_key, make_chunks
from gateway.bulk_import.client import Abandoned, Fatal, Outcome, Retry, Sender
from gateway.bulk_import.csv_mapping import MappingError
from gateway.bulk_import.progress import Progress
from gateway.bulk_import.readers import Format, ReadError, open_records
from gateway.bulk_import.summary import render

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


class _Stop(Exception):
    """The run cannot go on; the message says why (already printed)."""


class _Errors:
    """The errors file: one NDJSON line per rejected row, created on first use
    and readable by its owner only, because it holds the rows as given."""

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
        self.stop = asyncio.Event()
        self.outstanding: deque[tuple[Chunk, asyncio.Task[Outcome] | Outcome]] = deque()

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
        errors = _Errors(opts.errors_path, cp.errors_bytes)
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
        errors: _Errors,
        progress: Progress,
        *,
        send: bool,
    ) -> int:
        opts = self.opts
        headers = {"Authorization": f"Bearer {opts.token}"}
        limits = httpx.Limits(max_connections=opts.concurrency)
        async with httpx.AsyncClient(
            base_url=opts.url,
            headers=headers,
            timeout=opts.timeout,
            limits=limits,
            transport=self.transport,
        ) as http:
            sender = Sender(http, targets=cp.targets, stop=self.stop, retry=self.retry)
            with self._signals():
                try:
                    finished = await self._feed(cp, chunks, sender, errors, progress, send=send)
                except Fatal as exc:
                    self.say(f"gateway import: stopped: {exc}")
                    return EXIT_ERROR
                except _Stop:
                    return EXIT_INTERRUPTED
                except OSError as exc:  # the checkpoint or errors file could not be written
                    self.say(f"gateway import: {exc}")
                    return EXIT_ERROR
                finally:
                    await self._abandon_rest()
        if not finished:
            return EXIT_INTERRUPTED
        progress.update(cp.offset, cp.counts.rows_read, cp.counts.rejected, force=True)
        if send:
            cp.complete = True
            cp_file.save(opts.checkpoint_path, cp)
        return EXIT_REJECTED if cp.counts.rejected else EXIT_OK

    async def _feed(
        self,
        cp: Checkpoint,
        chunks: Iterator[Chunk],
        sender: Sender,
        errors: _Errors,
        progress: Progress,
        *,
        send: bool,
    ) -> bool:
        """Sends and settles every chunk; False when a stop cut it short."""
        slots = asyncio.Semaphore(self.opts.concurrency)
        window = 2 * self.opts.concurrency
        for chunk in chunks:
            if self.stop.is_set():
                break
            while len(self.outstanding) >= window:
                await self._settle_next(cp, errors, progress, send=send)
            if chunk.profiles and send:
                job = self._send(sender, slots, chunk, idempotency_key(cp.run_id, chunk))
                self.outstanding.append((chunk, asyncio.create_task(job)))
            else:
                self.outstanding.append((chunk, Outcome(0, False)))
            while self.outstanding and _ready(self.outstanding[0][1]):
                await self._settle_next(cp, errors, progress, send=send)
            # Let responses in between chunks: cutting one is CPU work.
            await asyncio.sleep(0)
        else:
            while self.outstanding:
                await self._settle_next(cp, errors, progress, send=send)
            return True
        while self.outstanding:
            await self._settle_next(cp, errors, progress, send=send)
        return False

    async def _send(
        self, sender: Sender, slots: asyncio.Semaphore, chunk: Chunk, key: str
    ) -> Outcome:
        async with slots:
            return await sender.send(chunk, key)

    async def _settle_next(
        self, cp: Checkpoint, errors: _Errors, progress: Progress, *, send: bool
    ) -> None:
        chunk, job = self.outstanding[0]
        if isinstance(job, asyncio.Task):
            await asyncio.wait({job})
            if job.cancelled():
                raise _Stop
            exc = job.exception()
            if isinstance(exc, Abandoned):
                raise _Stop
            if exc is not None:
                raise exc
            outcome = job.result()
        else:
            outcome = job
        self.outstanding.popleft()
        refused = [
            Rejection(chunk.lines[i], found, chunk.sources[i])
            for i, found in outcome.refused.items()
        ]
        errors.write(chunk.rejected + refused)
        counts: Counts = cp.counts
        counts.rows_read += chunk.rows_read
        counts.rejected += len(chunk.rejected) + len(refused)
        if send:
            counts.accepted += outcome.accepted
            counts.replayed += outcome.accepted if outcome.replayed else 0
            counts.chunks += 1 if chunk.profiles else 0
        else:
            counts.accepted += len(chunk.profiles)
        cp.offset, cp.next_line, cp.errors_bytes = chunk.end_offset, chunk.next_line, errors.size
        if send:
            cp_file.save(self.opts.checkpoint_path, cp)
        progress.update(cp.offset, counts.rows_read, counts.rejected)

    async def _abandon_rest(self) -> None:
        tasks = [job for _, job in self.outstanding if isinstance(job, asyncio.Task)]
        self.outstanding.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []

        def on_signal() -> None:
            if self.stop.is_set():
                # A second signal: stop waiting for the chunks in flight.
                for _, job in list(self.outstanding):
                    if isinstance(job, asyncio.Task):
                        job.cancel()
                return
            self.stop.set()
            self.say("\nstopping: waiting for the chunks in flight (signal again to abandon them)")

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread: the caller handles signals
            installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)


def _ready(job: asyncio.Task[Outcome] | Outcome) -> bool:
    return not isinstance(job, asyncio.Task) or job.done()


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
