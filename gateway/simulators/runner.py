"""Runs the three simulators in one event loop, for `gateway simulate` and
`gateway demo`: each on its own port, until the surrounding task is cancelled.

Omneo's webhooks go to `{omneo_webhook_base_url}/v1/webhooks/omneo/profile.created`
and `.../profile.updated`. The default Omneo token writes in namespace
"gateway" and the webhooks subscribe in "gateway-webhooks": were they the same,
Omneo's no-echo rule would never send the gateway its confirmations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import msgspec
from starlette.applications import Starlette

from gateway.simulators.import_batch import API_ROOT as IMPORT_BATCH_API_ROOT
from gateway.simulators.import_batch import DEFAULT_CUSTOM_FIELDS, create_import_batch_app
from gateway.simulators.ocamba import create_ocamba_app
from gateway.simulators.omneo import API_ROOT as OMNEO_API_ROOT
from gateway.simulators.omneo import create_omneo_app
from gateway.simulators.omneo_webhooks import SignatureEncoding
from gateway.simulators.serving import serve_app

logger = logging.getLogger(__name__)

DEFAULT_OCAMBA_TOKEN = "ocamba-token"
DEFAULT_OMNEO_TOKEN = "omneo-token"
DEFAULT_OMNEO_NAMESPACE = "gateway"
DEFAULT_OMNEO_WEBHOOK_NAMESPACE = "gateway-webhooks"
DEFAULT_IMPORT_BATCH_TOKEN = "import-batch-token"
DEFAULT_IMPORT_BATCH_DB_ID = 1
WEBHOOK_CREATED_PATH = "/v1/webhooks/omneo/profile.created"
WEBHOOK_UPDATED_PATH = "/v1/webhooks/omneo/profile.updated"


class SimulatorConfig(msgspec.Struct, kw_only=True, frozen=True):
    """Everything the simulators are started with. Port 0 picks a free port."""

    host: str = "127.0.0.1"
    ocamba_port: int = 9101
    omneo_port: int = 9102
    import_batch_port: int = 9103
    ocamba_token: str = DEFAULT_OCAMBA_TOKEN
    ocamba_per_second: int = 10
    ocamba_per_minute: int = 150
    ocamba_second_window: float = 1.0
    ocamba_minute_window: float = 60.0  # shrunk by tests that watch the steady limit
    ocamba_max_in_flight: int = 4
    omneo_token: str = DEFAULT_OMNEO_TOKEN
    omneo_namespace: str = DEFAULT_OMNEO_NAMESPACE
    omneo_webhook_namespace: str = DEFAULT_OMNEO_WEBHOOK_NAMESPACE
    omneo_webhook_base_url: str | None = None  # None: Omneo sends no webhooks
    omneo_webhook_secret: str = ""
    omneo_signature_header: str = "X-Omneo-Hmac-SHA256"
    omneo_signature_encoding: SignatureEncoding = "hex"
    omneo_processing_delay: float = 0.05
    import_batch_token: str = DEFAULT_IMPORT_BATCH_TOKEN
    import_batch_db_id: int = DEFAULT_IMPORT_BATCH_DB_ID
    # The database's custom fields; data naming any other is refused per profile.
    import_batch_fields: tuple[str, ...] = DEFAULT_CUSTOM_FIELDS
    seed: int | None = None


class RunningSimulators(msgspec.Struct, kw_only=True, frozen=True):
    """The started simulators: their server URLs (where `/_sim/*` is) and apps
    (`app.state.sim`). The gateway's base URLs are `*_api_url`: Omneo and
    import_batch serve their APIs under `/api`, as their docs show."""

    config: SimulatorConfig
    ocamba_url: str
    omneo_url: str
    import_batch_url: str
    ocamba: Starlette
    omneo: Starlette
    import_batch: Starlette

    @property
    def omneo_api_url(self) -> str:
        return self.omneo_url + OMNEO_API_ROOT

    @property
    def import_batch_api_url(self) -> str:
        return self.import_batch_url + IMPORT_BATCH_API_ROOT

    def gateway_env(self) -> dict[str, str]:
        """The gateway's environment variables that point it at these simulators."""
        c = self.config
        return {
            "GATEWAY_OCAMBA_URL": self.ocamba_url,
            "GATEWAY_OCAMBA_TOKEN": c.ocamba_token,
            "GATEWAY_OMNEO_URL": self.omneo_api_url,
            "GATEWAY_OMNEO_TOKEN": c.omneo_token,
            "GATEWAY_OMNEO_WEBHOOK_SECRET": c.omneo_webhook_secret,
            "GATEWAY_OMNEO_WEBHOOK_SIGNATURE_HEADER": c.omneo_signature_header,
            "GATEWAY_IMPORT_BATCH_URL": self.import_batch_api_url,
            "GATEWAY_IMPORT_BATCH_TOKEN": c.import_batch_token,
            "GATEWAY_IMPORT_BATCH_DB_ID": str(c.import_batch_db_id),
        }


def webhook_urls(base_url: str | None) -> tuple[str | None, str | None]:
    if base_url is None:
        return None, None
    base = base_url.rstrip("/")
    return base + WEBHOOK_CREATED_PATH, base + WEBHOOK_UPDATED_PATH


def build_apps(config: SimulatorConfig) -> tuple[Starlette, Starlette, Starlette]:
    """(ocamba, omneo, import_batch) apps, not yet served."""
    created_url, updated_url = webhook_urls(config.omneo_webhook_base_url)
    ocamba = create_ocamba_app(
        token=config.ocamba_token,
        per_second=config.ocamba_per_second,
        per_minute=config.ocamba_per_minute,
        second_window=config.ocamba_second_window,
        minute_window=config.ocamba_minute_window,
        max_in_flight=config.ocamba_max_in_flight,
        seed=config.seed,
    )
    omneo = create_omneo_app(
        tokens={config.omneo_token: config.omneo_namespace},
        webhook_created_url=created_url,
        webhook_updated_url=updated_url,
        webhook_secret=config.omneo_webhook_secret,
        webhook_namespace=config.omneo_webhook_namespace,
        signature_header=config.omneo_signature_header,
        signature_encoding=config.omneo_signature_encoding,
        processing_delay=config.omneo_processing_delay,
        seed=config.seed,
    )
    import_batch = create_import_batch_app(
        token=config.import_batch_token,
        db_id=config.import_batch_db_id,
        fields=config.import_batch_fields,
        seed=config.seed,
    )
    return ocamba, omneo, import_batch


@contextlib.asynccontextmanager
async def running_simulators(config: SimulatorConfig) -> AsyncIterator[RunningSimulators]:
    """Serves the three simulators while the block runs."""
    ocamba, omneo, import_batch = build_apps(config)
    host = config.host
    async with contextlib.AsyncExitStack() as stack:
        ocamba_url = await stack.enter_async_context(
            serve_app(ocamba, host=host, port=config.ocamba_port)
        )
        omneo_url = await stack.enter_async_context(
            serve_app(omneo, host=host, port=config.omneo_port)
        )
        import_batch_url = await stack.enter_async_context(
            serve_app(import_batch, host=host, port=config.import_batch_port)
        )
        logger.info(
            "simulators up: ocamba %s, omneo %s, import_batch %s",
            ocamba_url,
            omneo_url,
            import_batch_url,
        )
        yield RunningSimulators(
            config=config,
            ocamba_url=ocamba_url,
            omneo_url=omneo_url,
            import_batch_url=import_batch_url,
            ocamba=ocamba,
            omneo=omneo,
            import_batch=import_batch,
        )


async def run_simulators(
    config: SimulatorConfig, on_ready: Callable[[RunningSimulators], None] | None = None
) -> None:
    """Serves until cancelled; `on_ready` gets the URLs once all three listen."""
    async with running_simulators(config) as running:
        if on_ready is not None:
            on_ready(running)
        await asyncio.Event().wait()
