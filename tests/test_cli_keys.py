"""`gateway generate-key`, `rotate-key` and `purge`, run as an operator would."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from gateway.crypto import Sealer, parse_keys
from gateway.schema import NormalizedProfile
from gateway.store.base import NewRequest
from gateway.store.sqlite import SQLiteStore


def gateway(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**os.environ, "GATEWAY_LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def new_key(key_id: str) -> str:
    made = gateway("generate-key", "--id", key_id, env={})
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


async def _write(url: str, keys: str, n: int) -> None:
    store = SQLiteStore.from_url(url, sealer=Sealer.from_spec(keys))
    await store.open()
    profiles = [
        NormalizedProfile(external_id=f"p-{i}", email=f"user{i}@example.org") for i in range(n)
    ]
    await store.accept(NewRequest("r1", "crm", ["omneo"], profiles, time.time()))
    await store.close()


async def _emails(url: str, keys: str) -> set[str | None]:
    store = SQLiteStore.from_url(url, sealer=Sealer.from_spec(keys))
    await store.open()
    try:
        views = [await store.get_profile(f"p-{i}") for i in range(50)]
        return {v.profile.email for v in views if v is not None and v.profile is not None}
    finally:
        await store.close()


def test_generate_key_prints_a_usable_aes_256_key() -> None:
    entry = new_key("k2026")
    [(key_id, raw)] = parse_keys(entry)
    assert key_id == "k2026" and len(raw) == 32
    assert new_key("k2026") != entry
    assert gateway("generate-key", "--id", "bad id!", env={}).returncode == 2


def test_rotate_key_reencrypts_old_rows_and_retires_the_old_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    old, new = new_key("k1"), new_key("k2")
    asyncio.run(_write(url, old, 50))

    done = gateway(
        "rotate-key",
        "--span",
        "7",
        env={"GATEWAY_DATABASE_URL": url, "GATEWAY_ENCRYPTION_KEYS": f"{new},{old}"},
    )
    assert done.returncode == 0, done.stderr
    assert "profile_writes 50" in done.stdout
    assert "remove from GATEWAY_ENCRYPTION_KEYS: k1" in done.stdout
    assert "100.0%" in done.stderr and "ETA" in done.stderr  # the progress bar
    assert "@example.org" not in done.stdout + done.stderr

    # The old key can go: every row opens with the new one alone.
    assert asyncio.run(_emails(url, new)) == {f"user{i}@example.org" for i in range(50)}
    # Running it again finds nothing to do.
    again = gateway("rotate-key", env={"GATEWAY_DATABASE_URL": url, "GATEWAY_ENCRYPTION_KEYS": new})
    assert again.returncode == 0 and "profile_writes 0" in again.stdout


def test_a_process_without_the_needed_key_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    asyncio.run(_write(url, new_key("k1"), 1))
    refused = gateway(
        "rotate-key", env={"GATEWAY_DATABASE_URL": url, "GATEWAY_ENCRYPTION_KEYS": new_key("k2")}
    )
    assert refused.returncode == 1
    assert "'k1', which GATEWAY_ENCRYPTION_KEYS does not list" in refused.stderr


def test_rotate_key_needs_a_key_and_bad_keys_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    none = gateway("rotate-key", env={"GATEWAY_DATABASE_URL": url, "GATEWAY_ENCRYPTION_KEYS": ""})
    assert none.returncode == 2 and "set GATEWAY_ENCRYPTION_KEYS" in none.stderr
    short = gateway(
        "migrate", env={"GATEWAY_DATABASE_URL": url, "GATEWAY_ENCRYPTION_KEYS": "k:AAAA"}
    )
    assert short.returncode == 2 and "AES-256 needs 32" in short.stderr


def test_purge_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    asyncio.run(_write(url, "", 3))
    done = gateway("purge", "--days", "1", env={"GATEWAY_DATABASE_URL": url})
    # Still pending: nothing may be purged.
    assert done.returncode == 0 and "payloads of 0 writes" in done.stdout
    off = gateway("purge", env={"GATEWAY_DATABASE_URL": url, "GATEWAY_RETENTION_DAYS": "0"})
    assert off.returncode == 2 and "retention is off" in off.stderr


def test_rows_in_clear_need_the_migration_switch_to_be_sealed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    asyncio.run(_write(url, "", 3))  # stored before any key was set
    key = new_key("k1")
    refused = gateway(
        "rotate-key", env={"GATEWAY_DATABASE_URL": url, "GATEWAY_ENCRYPTION_KEYS": key}
    )
    assert refused.returncode == 1
    assert "GATEWAY_ALLOW_PLAINTEXT_ROWS=true" in refused.stderr
    migrated = gateway(
        "rotate-key",
        env={
            "GATEWAY_DATABASE_URL": url,
            "GATEWAY_ENCRYPTION_KEYS": key,
            "GATEWAY_ALLOW_PLAINTEXT_ROWS": "true",
        },
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "profile_writes 3" in migrated.stdout
    # Sealed now: the key alone, switch off, reads every row.
    assert asyncio.run(_emails(url, key)) == {f"user{i}@example.org" for i in range(3)}
