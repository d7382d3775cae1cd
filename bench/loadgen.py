"""An open-loop HTTP/1.1 load generator: requests at a fixed rate, whatever the
server does, with latency measured from each request's *scheduled* send time.

wrk keeps a fixed number of requests in flight, so a slow server slows the
load down and its latency hides (coordinated omission); wrk2 and vegeta, which
send at a fixed rate, are not in Debian. This sends request i at start + i/rate
over a pool of keep-alive connections; when every connection is busy the
request waits for one and that wait counts in its latency. It writes the
request bytes and reads the status line, headers and Content-Length body
itself, which costs a fraction of an HTTP client library, so one process keeps
a schedule of several thousand requests a second (`sched_lag_p99_ms` in its
output says whether it did). Prints one JSON object.

    .venv/bin/python bench/loadgen.py --port 8080 --path /v1/profiles \\
        --body-file profile.json --token T --rate 1000 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

import msgspec


class Result(msgspec.Struct, kw_only=True):
    rate: float
    scheduled: int  # measured requests (after the warm-up)
    completed: int  # measured requests answered 2xx
    failed: int  # measured requests answered otherwise, or lost with their connection
    unfinished: int  # measured requests still unanswered at the end
    statuses: dict[str, int]
    latencies_ms: list[float]  # of the completed measured requests, sorted
    sched_lag_p99_ms: float  # how late this process enqueued requests: its own lag
    seconds: float


def _request(port: int, path: str, token: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request, read its whole response; the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    if length:
        await reader.readexactly(length)
    return status


async def generate(
    port: int,
    path: str,
    token: str,
    body: bytes,
    rate: float,
    seconds: float,
    warmup: float,
    connections: int,
    start_at: float,
) -> Result:
    request = _request(port, path, token, body)
    warm_count = int(warmup * rate)
    total = warm_count + int(seconds * rate)
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    failed = 0

    async def connection() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (item := await queue.get()) is not None:
                index, scheduled = item
                try:
                    status = await _exchange(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    status = 0
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                if index < warm_count:
                    continue
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if 200 <= status < 300:
                    latencies.append((time.perf_counter() - scheduled) * 1000)
                else:
                    failed += 1
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    # Several generator processes share one start time, given on the wall clock.
    await asyncio.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    lags: list[float] = []
    index = 0
    while index < total:
        now = time.perf_counter()
        # Everything due by now goes at once: the loop wakes later than asked
        # under load, and those requests are already late.
        while index < total and t0 + index / rate <= now:
            scheduled = t0 + index / rate
            lags.append(now - scheduled)
            queue.put_nowait((index, scheduled))
            index += 1
        if index < total:
            await asyncio.sleep(max(0.0, t0 + index / rate - time.perf_counter()))
    for _ in workers:
        queue.put_nowait(None)
    # A server that fell behind gets a grace period, then what is left counts
    # as unfinished (its latency is at least that long, so it lands in the p99).
    _, pending = await asyncio.wait(workers, timeout=max(5.0, seconds))
    for task in pending:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.perf_counter() - t0
    measured = total - warm_count
    lags.sort()
    latencies.sort()
    return Result(
        rate=rate,
        scheduled=measured,
        completed=len(latencies),
        failed=failed,
        unfinished=measured - len(latencies) - failed,
        statuses=statuses,
        latencies_ms=[round(x, 3) for x in latencies],
        sched_lag_p99_ms=lags[int(len(lags) * 0.99)] * 1000 if lags else 0.0,
        seconds=elapsed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True, help="measured duration")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds sent, not measured")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock start time")
    args = parser.parse_args()
    with open(args.body_file, "rb") as f:
        body = f.read()
    result = asyncio.run(
        generate(
            args.port,
            args.path,
            args.token,
            body,
            args.rate,
            args.seconds,
            args.warmup,
            args.connections,
            args.start_at,
        )
    )
    sys.stdout.buffer.write(msgspec.json.encode(result) + b"\n")


if __name__ == "__main__":
    main()
