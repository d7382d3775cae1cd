"""Builds one adapter per configured backend, each with its own sender and pacer.

One pacer per backend account, shared by every dispatcher worker of that
backend in this process, so the workers together stay within the account's
limits (and learn from the server's headers about the other replicas).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from gateway.backends.base import BackendAdapter
from gateway.backends.import_batch import ImportBatchAdapter
from gateway.backends.ocamba import OcambaAdapter
from gateway.backends.omneo import OmneoAdapter
from gateway.backends.transport.pacing import FixedWindowPacer, optional_pacer
from gateway.backends.transport.sender import HttpSender
from gateway.config import Settings
from gateway.mapping.model import Mappings
from gateway.schema import Backend

# (backend, endpoint, status, seconds): status is the HTTP code, "timeout" or "error".
BackendCallObserver = Callable[[Backend, str, str, float], None]
# (backend, seconds) held back by a rate limit, for `gateway_rate_limit_wait_seconds`.
BackendWaitObserver = Callable[[Backend, float], None]


def pacing_max_wait(settings: Settings) -> float:
    """Longest a call waits for its pacer before handing its deliveries back
    for later: a quarter of the lease, so waiting cannot eat the lease."""
    return settings.lease_seconds / 4


def ocamba_time_budget(settings: Settings) -> float:
    """How long one Ocamba `deliver` keeps starting calls: whatever of the lease
    is left once its last call has waited for the pacer and timed out."""
    return max(0.0, settings.lease_seconds - settings.backend_timeout - pacing_max_wait(settings))


def new_client(settings: Settings) -> httpx.AsyncClient:
    """A client fit for every backend; the caller closes it on shutdown."""
    return httpx.AsyncClient(
        timeout=settings.backend_timeout,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )


def build_adapters(
    settings: Settings,
    client: httpx.AsyncClient | Mapping[Backend, httpx.AsyncClient],
    *,
    on_call: BackendCallObserver | None = None,
    on_wait: BackendWaitObserver | None = None,
    pacers: dict[Backend, FixedWindowPacer] | None = None,
    mapping: Mappings | None = None,
) -> dict[Backend, BackendAdapter]:
    """Adapters for the backends whose URL is set. `client` is one client for
    all, or one per backend (tests route each to its simulator). `pacers`, if
    given, receives each backend's pacer (the operator page shows its headroom).
    `mapping`: what each backend gets; None, the built-in mapping."""

    def client_for(backend: Backend) -> httpx.AsyncClient:
        return client if isinstance(client, httpx.AsyncClient) else client[backend]

    def sender(
        backend: Backend, url: str, pacer: FixedWindowPacer, headers: dict[str, str]
    ) -> HttpSender:
        observer = None
        if on_call is not None:
            call_observer = on_call

            def observer(endpoint: str, status: str, seconds: float) -> None:
                call_observer(backend, endpoint, status, seconds)

        return HttpSender(
            backend,
            client_for(backend),
            url,
            pacer=pacer,
            timeout=settings.backend_timeout,
            headers=headers,
            max_wait=pacing_max_wait(settings),
            on_call=observer,
        )

    def wait_observer(backend: Backend) -> Callable[[float], None] | None:
        if on_wait is None:
            return None
        wait_callback = on_wait
        return lambda seconds: wait_callback(backend, seconds)

    adapters: dict[Backend, BackendAdapter] = {}
    for backend in settings.configured_backends():
        if backend == "ocamba":
            pacer = FixedWindowPacer(
                settings.ocamba_rate_per_second,
                settings.ocamba_rate_per_minute,
                minute_window=settings.ocamba_minute_window,
                max_in_flight=settings.ocamba_max_in_flight,
                bulk_share=settings.bulk_share,
                on_wait=wait_observer(backend),
            )
            headers = {"Authorization": f"Bearer {settings.ocamba_token}"}
            adapters[backend] = OcambaAdapter(
                settings,
                sender(backend, settings.ocamba_url, pacer, headers),
                mapping=mapping.ocamba if mapping else None,
                time_budget=ocamba_time_budget(settings),
            )
        elif backend == "omneo":
            pacer = optional_pacer(
                settings.omneo_rate_per_second,
                settings.omneo_rate_per_minute,
                settings.omneo_max_in_flight,
                bulk_share=settings.bulk_share,
                on_wait=wait_observer(backend),
            )
            headers = {"Authorization": f"Bearer {settings.omneo_token}"}
            adapters[backend] = OmneoAdapter(
                settings,
                sender(backend, settings.omneo_url, pacer, headers),
                mapping=mapping.omneo if mapping else None,
            )
        else:
            # import_batch takes its token in the body, not in a header.
            pacer = optional_pacer(
                settings.import_batch_rate_per_second,
                settings.import_batch_rate_per_minute,
                settings.import_batch_max_in_flight,
                bulk_share=settings.bulk_share,
                on_wait=wait_observer(backend),
            )
            adapters[backend] = ImportBatchAdapter(
                settings,
                sender(backend, settings.import_batch_url, pacer, {}),
                mapping=mapping.import_batch if mapping else None,
            )
        if pacers is not None:
            pacers[backend] = pacer
    return adapters
