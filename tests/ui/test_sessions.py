"""Operator page sessions end server-side: on sign-out, a copied cookie dies
too; `gateway revoke-sessions` ends every session; on PostgreSQL it holds on
every replica sharing the database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway.__main__ import main
from gateway.app import create_app
from gateway.config import Settings
from gateway.store.base import Store
from gateway.ui import session
from tests.conftest import TOKEN
from tests.store import pg

UI = {"X-Gateway-UI": "1"}


def sign_in(client: TestClient) -> str:
    client.cookies.clear()
    r = client.post("/ui/session", data={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303
    return str(client.cookies[session.COOKIE])


def with_cookie(client: TestClient, cookie: str) -> int:
    client.cookies.clear()
    client.cookies.set(session.COOKIE, cookie)
    return int(client.get("/ui/api/status").status_code)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def test_sign_out_revokes_a_copied_cookie(client: TestClient) -> None:
    copied = sign_in(client)
    other = sign_in(client)  # a second session of the same app
    assert with_cookie(client, copied) == 200
    assert client.post("/ui/sign-out", headers=UI).status_code == 204
    assert with_cookie(client, copied) == 401
    assert with_cookie(client, other) == 200  # only the session signed out ended


def test_revoke_sessions_ends_every_session(
    client: TestClient, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cookies = [sign_in(client) for _ in range(3)]
    assert all(with_cookie(client, c) == 200 for c in cookies)
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{db_path}")
    assert main(["revoke-sessions"]) == 0
    assert [with_cookie(client, c) for c in cookies] == [401, 401, 401]
    sign_in(client)  # signing in again works
    assert client.get("/ui/api/status").status_code == 200


def test_on_postgresql_a_sign_out_holds_on_every_replica(
    settings: Settings, pg_database: str
) -> None:
    pg.truncate(pg_database)
    settings.database_url = pg_database
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        cookie = sign_in(a)
        assert with_cookie(b, cookie) == 200  # a session works on every replica
        a.cookies.clear()
        a.cookies.set(session.COOKIE, cookie)
        assert a.post("/ui/sign-out", headers=UI).status_code == 204
        assert with_cookie(b, cookie) == 401
        kept = sign_in(b)
        assert with_cookie(a, kept) == 200
        store: Store = b.app.state.ctx.store  # type: ignore[attr-defined]
        assert b.portal is not None
        assert b.portal.call(store.end_all_ui_sessions) == 1
        assert with_cookie(a, kept) == 401


@pytest.mark.anyio
async def test_the_store_keeps_sessions_until_they_end_or_expire(store: Store) -> None:
    now = time.time()
    await store.add_ui_session("a", "crm", now + 100, now)
    await store.add_ui_session("b", "crm", now + 100, now)
    assert await store.ui_session_alive("a", now)
    assert not await store.ui_session_alive("a", now + 100)  # expired
    assert not await store.ui_session_alive("nope", now)
    await store.end_ui_session("a")
    assert not await store.ui_session_alive("a", now)
    assert await store.ui_session_alive("b", now)
    # A later sign-in clears the expired rows, so the table stays small.
    await store.add_ui_session("c", "crm", now + 500, now + 200)
    assert await store.end_all_ui_sessions() == 1
    assert not await store.ui_session_alive("c", now)
