"""Fixtures for the simulator tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.simulators.serving import serve_app
from tests.simulators.helpers import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    async with serve_app(recv.app()) as url:
        recv.url = url
        yield recv
