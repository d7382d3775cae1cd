"""Part 2, single-profile POST latency at fixed rates (open loop).

`loadgen.py`, in its own processes, sends `POST /v1/profiles` at a fixed rate
and measures each request from its scheduled send time (so a server that
falls behind shows its queueing in the latency). First 1,000 requests/s for
p50/p99; then rates step up until p99 reaches 25 ms (a step that misses is
tried once more, because other work on a shared machine can spoil one step),
and the highest passing rate is reported (if 1,000/s already misses, the rate
halves until a step passes, down to 100/s). The same for the bare Starlette app
of part 1 (ceiling (a)), which also shows what the generator itself can
sustain on this machine.

    .venv/bin/python bench/single_post.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
from bare_app import bare_app_process
from common import (
    TOKEN,
    Row,
    free_port,
    gateway_env,
    gateway_process,
    percentile,
    profile_body,
)
from loadgen import Result

PART = "2 single POST"
HERE = Path(__file__).parent
P99_LIMIT_MS = 25.0
# One generator process keeps a schedule of about 4,000 requests/s on this
# machine kind; above that the rate is split between processes.
RATE_PER_PROCESS = 4000
CONNECTIONS_PER_PROCESS = 64
FULL_STEPS = (1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 15000)
QUICK_STEPS = (100, 200)
MIN_RATE = 100  # below the first step, halving stops here


class Step(msgspec.Struct, kw_only=True):
    rate: float
    achieved: float  # answered 2xx per second of schedule
    p50_ms: float
    p99_ms: float
    failed: int
    unfinished: int
    sched_lag_p99_ms: float  # the generator's own lateness, worst process

    @property
    def passed(self) -> bool:
        return (
            self.p99_ms < P99_LIMIT_MS
            and self.failed == 0
            and self.unfinished == 0
            and self.achieved >= 0.95 * self.rate
        )


def offer(port: int, body_file: Path, rate: float, seconds: float, warmup: float) -> Step:
    """Send at `rate` for `seconds` (after `warmup`), from enough processes."""
    processes = max(1, math.ceil(rate / RATE_PER_PROCESS))
    start_at = time.time() + 0.5  # every process connected and waiting by then
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "loadgen.py"),
                "--port",
                str(port),
                "--path",
                "/v1/profiles",
                "--body-file",
                str(body_file),
                "--token",
                TOKEN,
                "--rate",
                str(rate / processes),
                "--seconds",
                str(seconds),
                "--warmup",
                str(warmup),
                "--connections",
                str(CONNECTIONS_PER_PROCESS),
                "--start-at",
                str(start_at),
            ],
            stdout=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    results: list[Result] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=warmup + 2 * seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen.py exited with {proc.returncode}")
        results.append(msgspec.json.decode(out, type=Result))
    return merge(rate, seconds, results)


def merge(rate: float, seconds: float, results: Sequence[Result]) -> Step:
    latencies = sorted(x for r in results for x in r.latencies_ms)
    unfinished = sum(r.unfinished for r in results)
    failed = sum(r.failed for r in results)
    # Unanswered requests count at the top of the distribution, so they push
    # the p99 up rather than vanish: at least loadgen's grace period (finite,
    # so the JSON keeps a number).
    ranked = latencies + [max(5.0, seconds) * 1000] * (unfinished + failed)
    return Step(
        rate=rate,
        achieved=len(latencies) / seconds,
        p50_ms=percentile(ranked, 50),
        p99_ms=percentile(ranked, 99),
        failed=failed,
        unfinished=unfinished,
        sched_lag_p99_ms=max(r.sched_lag_p99_ms for r in results),
    )


def _progress(message: str) -> None:
    print(f"  [single_post] {message}", file=sys.stderr, flush=True)


def _describe(step: Step) -> str:
    return (
        f"{step.rate:>6.0f}/s: p50 {step.p50_ms:7.2f} ms  p99 {step.p99_ms:8.2f} ms"
        f"  answered {step.achieved:7.0f}/s  failed {step.failed}  unfinished {step.unfinished}"
        f"  generator lag p99 {step.sched_lag_p99_ms:.1f} ms"
    )


def sweep(
    name: str, port: int, body_file: Path, steps: Sequence[int], seconds: float, warmup: float
) -> tuple[Step, Step | None]:
    """The first step's figures (the better try, if it took two), and the
    highest step that passed (None: none). When the first step already
    misses, halving rates below it say how far off it is."""

    def attempt(rate: float) -> Step:
        step = offer(port, body_file, rate, seconds, warmup)
        _progress(f"{name} {_describe(step)}")
        if not step.passed:
            again = offer(port, body_file, rate, seconds, warmup)
            _progress(f"{name} {_describe(again)} (again)")
            step = min(step, again, key=lambda s: (not s.passed, s.p99_ms))
        return step

    first = attempt(steps[0])
    if not first.passed:
        rate = steps[0] / 2
        while rate >= MIN_RATE:
            step = attempt(rate)
            if step.passed:
                return first, step
            rate /= 2
        return first, None
    best = first
    for rate in steps[1:]:
        step = attempt(rate)
        if not step.passed:
            break
        best = step
    return first, best


def run(quick: bool) -> list[Row]:
    steps, seconds, warmup = (QUICK_STEPS, 0.5, 0.2) if quick else (FULL_STEPS, 5.0, 1.0)
    with tempfile.TemporaryDirectory(prefix="bench-single-") as tmp:
        body_file = Path(tmp) / "profile.json"
        body_file.write_bytes(profile_body("single"))
        with gateway_process(gateway_env(Path(tmp) / "gateway.db", free_port())) as gateway:
            port = int(gateway.base_url.rsplit(":", 1)[1])
            gw_first, gw_best = sweep("gateway", port, body_file, steps, seconds, warmup)
        with bare_app_process(free_port()) as bare:
            port = int(bare.base_url.rsplit(":", 1)[1])
            bare_first, bare_best = sweep("bare", port, body_file, steps, seconds, warmup)

    at = f"{steps[0]}/s"
    shape = f"open loop, {seconds:g}s per step, {CONNECTIONS_PER_PROCESS} connections a process"
    gw_max = gw_best.rate if gw_best else 0.0
    bare_max = bare_best.rate if bare_best else 0.0
    top = f"steps {', '.join(str(s) for s in steps)}/s, halving below the first"
    return [
        Row(part=PART, metric=f"gateway p50 at {at}", value=gw_first.p50_ms, unit="ms", note=shape),
        Row(
            part=PART,
            metric=f"gateway p99 at {at}",
            value=gw_first.p99_ms,
            unit="ms",
            target="<= 10",
            met=gw_first.p99_ms <= 10,
        ),
        Row(
            part=PART,
            metric="gateway max rate, p99 < 25 ms",
            value=gw_max,
            unit="req/s",
            target=">= 5000",
            met=gw_max >= 5000,
            note=f"{top}; p99 there {gw_best.p99_ms:.1f} ms" if gw_best else top,
        ),
        Row(part=PART, metric=f"ceiling (a) p50 at {at}", value=bare_first.p50_ms, unit="ms"),
        Row(part=PART, metric=f"ceiling (a) p99 at {at}", value=bare_first.p99_ms, unit="ms"),
        Row(
            part=PART,
            metric="ceiling (a) max rate, p99 < 25 ms",
            value=bare_max,
            unit="req/s",
            note=f"p99 there {bare_best.p99_ms:.1f} ms" if bare_best else "",
        ),
        Row(
            part=PART,
            metric=f"generator lag p99 at {at}",
            value=max(gw_first.sched_lag_p99_ms, bare_first.sched_lag_p99_ms),
            unit="ms",
            note="how late the generator sent; small means it kept its schedule",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, tiny loads")
    args = parser.parse_args()
    for row in run(args.quick):
        print(msgspec.json.encode(row).decode())


if __name__ == "__main__":
    main()
