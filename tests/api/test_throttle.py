"""Failed authentication is throttled per client address (README, Security)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.auth.throttle import MAX_ADDRESSES, AuthThrottle
from gateway.config import Settings
from tests.conftest import AUTH, TOKEN

WRONG = {"Authorization": "Bearer " + "w" * 40}
LIMIT = 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(settings: Settings, clock: Clock) -> Starlette:
    settings.auth_failure_limit = LIMIT
    settings.auth_failure_window = 60.0
    app = create_app(settings)
    app.state.ctx.throttle = AuthThrottle(LIMIT, 60.0, clock)
    return app


@pytest.fixture
def attacker(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app, client=("203.0.113.9", 40000)) as c:
        yield c


def test_wrong_bearer_tokens_are_throttled_with_retry_after(
    app: Starlette, attacker: TestClient, clock: Clock
) -> None:
    for _ in range(LIMIT):
        assert attacker.get("/v1/dead-letters", headers=WRONG).status_code == 401
    throttled = attacker.get("/v1/dead-letters", headers=WRONG)
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "60"
    assert throttled.json()["error"] == "too_many_failures"
    # Even the right token: an answer that differed would tell a guesser it won.
    assert attacker.get("/v1/dead-letters", headers=AUTH).status_code == 429
    assert attacker.post("/v1/profiles", headers=AUTH, json={"external_id": "x"}).status_code == 429
    # Another address is not held up (no `with`: the attacker's client runs the app).
    other = TestClient(app, client=("198.51.100.7", 40000))
    assert other.get("/v1/dead-letters", headers=AUTH).status_code == 200
    clock.now += 45
    assert attacker.get("/v1/dead-letters", headers=AUTH).headers["retry-after"] == "15"
    clock.now += 15
    assert attacker.get("/v1/dead-letters", headers=AUTH).status_code == 200


def test_a_request_without_credentials_is_not_a_guess(attacker: TestClient) -> None:
    for _ in range(LIMIT * 3):
        assert attacker.get("/v1/dead-letters").status_code == 401
    assert attacker.get("/v1/dead-letters", headers=AUTH).status_code == 200


def test_failed_sign_ins_to_the_operator_page_are_throttled(attacker: TestClient) -> None:
    html = {"Accept": "text/html"}
    for _ in range(LIMIT):
        assert (
            attacker.post("/ui/session", data={"token": "guess"}, headers=html).status_code == 401
        )
    page = attacker.post("/ui/session", data={"token": TOKEN}, headers=html)
    assert page.status_code == 429
    assert page.headers["retry-after"] == "60"
    assert "Too many failed sign-ins from this address; try again in 60 s." in page.text
    assert "set-cookie" not in page.headers
    # The bearer routes share the count: the same guesser, another door.
    assert attacker.get("/ui/api/status", headers=AUTH).status_code == 429


def test_sign_in_failures_count_toward_the_api_too(attacker: TestClient) -> None:
    for _ in range(LIMIT):
        attacker.post("/ui/session", data={"token": "guess"})
    assert attacker.get("/openapi.json", headers=AUTH).status_code == 429


def test_the_limit_is_a_setting_and_zero_turns_it_off(settings: Settings) -> None:
    env = {"GATEWAY_AUTH_FAILURE_LIMIT": "0", "GATEWAY_AUTH_FAILURE_WINDOW": "5"}
    loaded = Settings.from_env(env)
    assert (loaded.auth_failure_limit, loaded.auth_failure_window) == (0, 5.0)
    assert Settings().auth_failure_limit == 10
    settings.auth_failure_limit = 0
    with TestClient(create_app(settings)) as c:
        for _ in range(50):
            assert c.get("/v1/dead-letters", headers=WRONG).status_code == 401
        assert c.get("/v1/dead-letters", headers=AUTH).status_code == 200


def test_the_throttle_remembers_a_bounded_number_of_addresses(clock: Clock) -> None:
    throttle = AuthThrottle(2, 60.0, clock)
    for i in range(MAX_ADDRESSES + 500):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._failures) <= MAX_ADDRESSES
    # The newest addresses are kept; expired windows go first.
    throttle.failed("10.9.9.9")
    throttle.failed("10.9.9.9")
    assert throttle.retry_after("10.9.9.9") == 60
    clock.now += 61
    assert throttle.retry_after("10.9.9.9") is None
