"""Part 5, call efficiency: backend HTTP calls per profile, per backend, when the
gateway works through a backlog, beside a naive forwarder (bench/naive_forwarder.py:
one call per profile per backend, what a user would write instead).

The gateway drains a backlog to all three simulators with Ocamba's limits off
(the calls a profile costs do not depend on pacing, only on batching; a 429
would show as an extra call); its calls are counted by its own
`gateway_backend_call_seconds` metric, every status included, and checked
against what the simulators received. The naive forwarder then sends the first
profiles of the same sample, twice: against the same unlimited simulators (its
calls and wall time), and against Ocamba's documented limits (what a forwarder
without pacing gets: 429s, and profiles lost).

    .venv/bin/python bench/call_efficiency.py [--quick]
"""

from __future__ import annotations

import argparse

import msgspec
from common import GatewayProcess, Row
from drain import Drained, drain
from naive_forwarder import Forwarded, forward
from sims import ALL_TARGETS, NO_LIMIT, Simulators, backend_calls, bench_profile, simulators

from gateway.schema import Backend

PART = "5 call efficiency"
FULL_BACKLOG = 10_000
FULL_NAIVE = 2_000
QUICK_BACKLOG = 1_000  # enough for two full Omneo batches
QUICK_NAIVE = 100
OMNEO_TARGET = 1 / 400


class GatewayCalls(msgspec.Struct, kw_only=True):
    calls: dict[str, int]  # backend -> calls, by the gateway's metric
    received: dict[str, int]  # backend -> calls, by the simulator


def gateway_calls(backlog: int) -> tuple[Drained, GatewayCalls]:
    seen: list[GatewayCalls] = []

    def inspect(gw: GatewayProcess, sims: Simulators) -> None:
        calls: dict[str, int] = dict.fromkeys(ALL_TARGETS, 0)
        for (backend, _, _), n in backend_calls(gw.base_url).items():
            calls[backend] += n
        ocamba = sims.stats("ocamba")
        received = {
            "ocamba": int(
                ocamba["admitted"] + ocamba["throttled_window"] + ocamba["throttled_concurrency"]
            ),
            # The request logs hold the last 10,000 calls: plenty for batched sends.
            "omneo": int(sims.stats("omneo")["received"]),
            "import_batch": int(sims.stats("import_batch")["received"]),
        }
        seen.append(GatewayCalls(calls=calls, received=received))

    drained = drain(backlog, targets=ALL_TARGETS, webhooks=False, timeout=900, inspect=inspect)
    return drained, seen[0]


def naive(profiles: int, *, limits_on: bool) -> Forwarded:
    sample = [bench_profile("q", j) for j in range(profiles)]
    per_second, per_minute = (10, 150) if limits_on else (NO_LIMIT, NO_LIMIT)
    with simulators(ocamba_per_second=per_second, ocamba_per_minute=per_minute) as sims:
        return forward(sims, sample)


def rows(drained: Drained, gateway: GatewayCalls, free: Forwarded, limited: Forwarded) -> list[Row]:
    out: list[Row] = []
    n = drained.profiles
    for backend in ALL_TARGETS:
        # Per 1,000 profiles: a batched backend's figure is far below one a profile.
        per_1000 = 1000 * gateway.calls[backend] / n
        naive_per_1000 = 1000 * free.calls[backend] / free.profiles
        target, met = "", None
        if backend == "omneo":
            target, met = "<= 2.5 (1/400 a profile)", per_1000 <= 1000 * OMNEO_TARGET
        out.append(
            Row(
                part=PART,
                metric=f"{backend} calls per 1,000 profiles, gateway",
                value=round(per_1000, 2),
                unit="calls",
                target=target,
                met=met,
                note=(
                    f"{gateway.calls[backend]:,} calls for {n:,} profiles"
                    f" (the simulator received {gateway.received[backend]:,});"
                    f" {1000 / per_1000:,.0f} profiles/call" + _why(backend)
                ),
            )
        )
        out.append(
            Row(
                part=PART,
                metric=f"{backend} calls per 1,000 profiles, naive forwarder",
                value=round(naive_per_1000, 2),
                unit="calls",
                note=f"x{naive_per_1000 / per_1000:,.1f} the gateway's calls",
            )
        )
    gateway_seconds = max(drained.seconds[b] for b in ALL_TARGETS)
    out.append(
        Row(
            part=PART,
            metric="naive forwarder profiles/s (limits off)",
            value=round(free.profiles / free.seconds, 1),
            unit="profiles/s",
            note=(
                f"{free.profiles:,} profiles to all three in {free.seconds:.1f} s, 8 in flight;"
                f" the gateway: {n:,} in {gateway_seconds:.1f} s from launch"
                f" ({n / gateway_seconds:,.1f} profiles/s)"
            ),
        )
    )
    lost = limited.profiles - limited.delivered["ocamba"]
    out.append(
        Row(
            part=PART,
            metric="naive forwarder 429s (Ocamba's documented limits)",
            value=limited.too_many(),
            # No target: the baseline's 429s are the point; the gateway's are part 4's.
            note=(
                f"{limited.profiles:,} profiles in {limited.seconds:.1f} s; Ocamba answered"
                f" {limited.statuses['ocamba']}; {lost:,} of {limited.profiles:,} profiles"
                " never reached Ocamba (no retries); one that retried would need"
                f" {2 * limited.profiles / 150:.0f} min at 150 calls/min"
            ),
        )
    )
    return out


def _why(backend: Backend) -> str:
    if backend == "ocamba":
        return "; Ocamba has no batch create: one create per new profile, imports of 100"
    return ""


def run(quick: bool) -> list[Row]:
    backlog, sample = (QUICK_BACKLOG, QUICK_NAIVE) if quick else (FULL_BACKLOG, FULL_NAIVE)
    drained, gateway = gateway_calls(backlog)
    free = naive(sample, limits_on=False)
    limited = naive(sample, limits_on=True)
    return rows(drained, gateway, free, limited)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples, no timing")
    args = parser.parse_args()
    for row in run(args.quick):
        print(row)


if __name__ == "__main__":
    main()
