"""The connection limits of `gateway serve`: read from the environment, checked
at start, and handed to uvicorn."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, Settings
from gateway.serving import BoundedHttpToolsProtocol, limit_options, server_options


def test_limit_settings_have_bounded_defaults_and_reach_uvicorn() -> None:
    settings = Settings.from_env({})
    assert settings.webhook_max_body_bytes == 256 * 1024
    assert limit_options(settings) == {"limit_concurrency": 1000, "timeout_keep_alive": 5}
    tuned = Settings.from_env(
        {
            "GATEWAY_LIMIT_CONCURRENCY": "50",
            "GATEWAY_KEEP_ALIVE_TIMEOUT": "2.5",
            "GATEWAY_HEAD_TIMEOUT": "3",
            "GATEWAY_WEBHOOK_MAX_BODY_BYTES": "4096",
        }
    )
    assert limit_options(tuned) == {"limit_concurrency": 50, "timeout_keep_alive": 3}
    protocol = server_options(tuned.head_timeout)["http"]
    assert isinstance(protocol, type) and issubclass(protocol, BoundedHttpToolsProtocol)
    assert protocol.head_timeout == 3.0
    assert BoundedHttpToolsProtocol.head_timeout is None  # the shared class is untouched


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_LIMIT_CONCURRENCY", "0"),
        ("GATEWAY_WEBHOOK_MAX_BODY_BYTES", "0"),
        ("GATEWAY_HEAD_TIMEOUT", "0"),
        ("GATEWAY_BODY_READ_TIMEOUT", "-1"),
        ("GATEWAY_KEEP_ALIVE_TIMEOUT", "0"),
    ],
)
def test_a_limit_that_cannot_work_stops_the_start(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})
