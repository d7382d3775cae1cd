"""Send chunks concurrently, settle them in file order, checkpoint as they settle.

Up to `concurrency` chunks are being sent at once and twice that many are
outstanding, but a chunk is settled (its rejections written to the errors file,
its counts added, the checkpoint moved past it) only once every chunk before it
is: the checkpoint covers the contiguous prefix the gateway acknowledged, and
the errors file gets each chunk's rejections in that same order. A resumed run
starts right after the last chunk the gateway is known to hold, and re-sends at
worst the chunks that were in flight, which the gateway answers from its
idempotency record. The first SIGINT or SIGTERM stops reading and waits for the
chunks in flight; a second one abandons them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import httpx

from gateway.bulk_import import checkpoint as cp_file
from gateway.bulk_import.checkpoint import Checkpoint, Counts
from gateway.bulk_import.chunks import Chunk, Rejection, idempotency_key
from gateway.bulk_import.client import Abandoned, Fatal, Outcome, Retry, Sender
from gateway.bulk_import.errors_file import ErrorsFile
from gateway.bulk_import.progress import Progress

# How a pass over the chunks ended: every chunk settled, cut short by a signal,
# or stopped by an error (already said).
Ending = Literal["finished", "interrupted", "stopped"]


class _Stop(Exception):
    """The run cannot go on; the message says why (already printed)."""


class SendLoop:
    def __init__(
        self,
        *,
        url: str,
        token: str,
        timeout: float,
        concurrency: int,
        checkpoint_path: Path,
        say: Callable[[str], None],
        transport: httpx.AsyncBaseTransport | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self.concurrency = concurrency
        self.checkpoint_path = checkpoint_path
        self.say = say
        self.transport = transport
        self.retry = retry
        self.stop = asyncio.Event()
        self.outstanding: deque[tuple[Chunk, asyncio.Task[Outcome] | Outcome]] = deque()

    async def run(
        self,
        cp: Checkpoint,
        chunks: Iterator[Chunk],
        errors: ErrorsFile,
        progress: Progress,
        *,
        send: bool,
    ) -> Ending:
        """Sends (when `send`) and settles every chunk, checkpointing each."""
        headers = {"Authorization": f"Bearer {self.token}"}
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=self.timeout,
            limits=limits,
            transport=self.transport,
        ) as http:
            sender = Sender(
                http, targets=cp.targets, priority=cp.priority, stop=self.stop, retry=self.retry
            )
            with self._signals():
                try:
                    finished = await self._feed(cp, chunks, sender, errors, progress, send=send)
                except Fatal as exc:
                    self.say(f"gateway import: stopped: {exc}")
                    return "stopped"
                except _Stop:
                    return "interrupted"
                except OSError as exc:  # the checkpoint or errors file could not be written
                    self.say(f"gateway import: {exc}")
                    return "stopped"
                finally:
                    await self._abandon_rest()
        return "finished" if finished else "interrupted"

    async def _feed(
        self,
        cp: Checkpoint,
        chunks: Iterator[Chunk],
        sender: Sender,
        errors: ErrorsFile,
        progress: Progress,
        *,
        send: bool,
    ) -> bool:
        """Sends and settles every chunk; False when a stop cut it short."""
        slots = asyncio.Semaphore(self.concurrency)
        window = 2 * self.concurrency
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
        self, cp: Checkpoint, errors: ErrorsFile, progress: Progress, *, send: bool
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
            cp_file.save(self.checkpoint_path, cp)
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
