"""API tokens for tests, in one place: the gateway refuses tokens shorter than
32 characters, and tests/log_guard.py spots anything shaped `<name>-token` in a
log line, so every test token is `<name>-token-` and 32 hex digits."""

from __future__ import annotations

import hashlib

# Every scope (gateway/auth/tokens.py): the token of tests that do everything.
ALL_SCOPES = "write+read+operate+erase"


def api_token(name: str) -> str:
    return f"{name}-token-{hashlib.sha256(name.encode()).hexdigest()[:32]}"


def entry(app: str, token: str, scopes: str = ALL_SCOPES) -> str:
    """One GATEWAY_API_TOKENS entry; `scopes=""` for a bare (write-only) one."""
    return f"{app}:{token}:{scopes}" if scopes else f"{app}:{token}"
