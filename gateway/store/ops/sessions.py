"""The operator page's sessions (see gateway/ui/session.py). On PostgreSQL every
replica reads the same rows, so a sign-out holds on all of them."""

from __future__ import annotations

from gateway.store.plans import Execute, FetchValue, Plan


def add_ui_session(id_hash: str, app: str, expires_at: float, now: float) -> Plan[None]:
    # Sign-ins are rare: clearing the expired ones here keeps the table small.
    yield Execute("drop_expired_ui_sessions", (now,))
    yield Execute("add_ui_session", (id_hash, app, expires_at))


def ui_session_alive(id_hash: str, now: float) -> Plan[bool]:
    found = yield FetchValue("ui_session_alive", (id_hash, now))
    return found is not None


def end_ui_session(id_hash: str) -> Plan[None]:
    yield Execute("end_ui_session", (id_hash,))


def end_all_ui_sessions() -> Plan[int]:
    ended = yield Execute("end_all_ui_sessions")
    return int(ended)
