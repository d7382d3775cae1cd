"""Which replica sends to a rate-limited backend: one at a time, so the
account's limit holds in total; the others stand by and take over when the
leader dies (Store.lead: a PostgreSQL session lock; SQLite has one process).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.clock import Clock
from gateway.config import Settings
from gateway.schema import Backend
from gateway.store.base import Store, StoreError

log = logging.getLogger("gateway.dispatch")

LEADER_RETRY = 1.0  # seconds between tries to become a rate-limited backend's sender
# A new leader starts sending no sooner than this after taking over (see leading).
TAKEOVER_QUIET = 1.0


class Leadership:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        stopping: asyncio.Event,
        observe: Callable[[Backend, bool], None] | None = None,
    ) -> None:
        """`observe(backend, leading)`: told after each check (a metric)."""
        self.store = store
        self._observe = observe
        self.settings = settings
        self.clock = clock
        self.stopping = stopping  # ends a takeover wait
        self._following: set[Backend] = set()  # rate-limited backends led elsewhere
        # After a takeover, no worker of the backend sends before this time.
        self._resume_at: dict[Backend, float] = {}

    async def leading(self, backend: Backend) -> bool:
        try:
            leading = await self.store.lead(backend)
        except StoreError:
            log.exception("leadership check failed", extra={"backend": backend})
            return False
        if self._observe is not None:
            self._observe(backend, leading)
        if not leading:
            self._following.add(backend)
        elif backend in self._following:
            # Taking over from a leader that died: our pacer knows nothing of
            # what it sent in the current window, so wait for the next one.
            self._following.discard(backend)
            window = self.settings.rate_window(backend)
            wait = window - self.clock.now() % window
            if wait < TAKEOVER_QUIET:
                # The dead leader's last requests may still be on their way, or
                # queued at the backend: landing in the window we would start
                # in, they would push it over its limit. Start one window later.
                wait += window
            self._resume_at[backend] = self.clock.now() + wait
            log.warning("took over sending", extra={"backend": backend, "wait": wait})
        if leading:
            # Every worker of the backend waits, not only the one that saw the
            # takeover: another (a real-time worker), asking a moment later,
            # finds itself leading and would send in the dead leader's window.
            wait = self._resume_at.get(backend, 0.0) - self.clock.now()
            if wait > 0:
                await self.clock.wait(self.stopping, wait)
        return leading
