"""The gateway killed with SIGKILL again and again while it drains a backlog.

The harness is tests/e2e/crashloop.py. The seed is printed; set
CRASHLOOP_SEED=<seed> to replay a failing run's kill moments.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.e2e.crashloop import BACKENDS, CrashLoopConfig, CrashLoopResult, run_crash_loop


def seed() -> int:
    given = os.environ.get("CRASHLOOP_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


def assert_at_least_once_and_nothing_lost(result: CrashLoopResult) -> None:
    config = result.config
    assert len(result.snapshots) == config.kills
    assert result.stored_writes == config.profiles  # every 202 survived a SIGKILL
    assert result.lost == dict.fromkeys(BACKENDS, 0)
    assert result.lost_in_store == 0
    assert result.recorded_unreceived == 0
    assert result.resent_after_success == dict.fromkeys(BACKENDS, 0)
    # Sent again only what a killed life held leased: at most one claim per
    # worker (2) per backend per kill, a claim being one batch (Ocamba: 100).
    batch = {"ocamba": 100, "omneo": 500, "import_batch": 1000}
    for backend in BACKENDS:
        assert result.extra_sends[backend] <= config.kills * 2 * batch[backend], backend


def test_three_sigkills_during_the_drain_lose_nothing(tmp_path: Path) -> None:
    config = CrashLoopConfig(profiles=6000, kills=3, seed=seed(), workdir=tmp_path)
    result = run_crash_loop(config)
    print(result.summary())
    assert_at_least_once_and_nothing_lost(result)


@pytest.mark.faults
def test_100000_profiles_survive_repeated_sigkills(tmp_path: Path) -> None:
    config = CrashLoopConfig(
        profiles=100_000, kills=4, seed=seed(), workdir=tmp_path, drain_within=3600
    )
    result = run_crash_loop(config)
    print(result.summary())
    assert_at_least_once_and_nothing_lost(result)
