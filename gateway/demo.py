"""`gateway demo`: the whole flow on one machine, for a newcomer.

Embedded SQLite in the working directory, a demo token, the three backend
simulators on local ports, and the gateway pointed at them, with Omneo's
webhooks coming back signed to the gateway's receivers.

The import_batch simulator's database refuses a profile naming a field it
lacks, as a real one does; with `--mapping FILE` it is given the fields the
file sends besides its default ones (`demo_import_batch_fields`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.config import Settings
from gateway.crypto import generate_key
from gateway.mapping.load import mappings_for
from gateway.mapping.rules import CUSTOM_MATCHING
from gateway.serving import limit_options, server_options
from gateway.simulators.import_batch_fields import (
    DEFAULT_CUSTOM_FIELDS,
    REQUEST_KEYS,
    SYSTEM_FIELDS,
)
from gateway.simulators.runner import RunningSimulators, SimulatorConfig, running_simulators

# Long enough for the gateway's 32-character minimum, and plainly not a secret:
# the demo listens on 127.0.0.1 and its token is printed in the README.
DEMO_TOKEN = "demo-token-not-for-production-use-1"


def demo_key(database: str) -> str:
    """The demo's encryption key, kept beside its database so a restarted demo
    still reads what it stored. Created on first use, readable by its owner only."""
    path = Path(f"{database}.key")
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(generate_key("demo") + "\n")
    return path.read_text().strip()


def demo_import_batch_fields(mapping: str | None) -> tuple[str, ...]:
    """The fields of the demo's import_batch database: the simulator's default
    ones (what the built-in mapping and the banner's profile send) and, with a
    mapping file, every field name its [import_batch.fields] sends and its
    `field_name` for custom matching, so the demo imports what the file maps.
    The file is already checked (`gateway demo` does it before anything starts)."""
    names = list(DEFAULT_CUSTOM_FIELDS)
    if mapping:
        m = mappings_for(Settings(mapping_file=mapping)).import_batch
        names += m.fields.values()
        if m.matching in CUSTOM_MATCHING:
            names.append(m.field_name)
    # Request keys (email, phone) are no database fields; the system fields
    # the simulator knows need no naming (another `_...` one does).
    known = REQUEST_KEYS | SYSTEM_FIELDS
    return tuple(dict.fromkeys(name for name in names if name not in known))


def demo_settings(
    sims: RunningSimulators, host: str, port: int, database: str, mapping: str | None = None
) -> Settings:
    env = {
        **sims.gateway_env(),
        "GATEWAY_HOST": host,
        "GATEWAY_PORT": str(port),
        # Every scope: the newcomer reads profiles in full, replays and erases.
        "GATEWAY_API_TOKENS": f"demo:{DEMO_TOKEN}:write+read+operate+erase",
        "GATEWAY_DATABASE_URL": f"sqlite:///{database}",
        # Stored profiles are encrypted, as they should be in production.
        "GATEWAY_ENCRYPTION_KEYS": demo_key(database),
        # Short so a newcomer sees `unconfirmed` too if a webhook goes missing.
        "GATEWAY_OMNEO_CONFIRM_TIMEOUT": "60",
        "GATEWAY_MAPPING_FILE": mapping or "",
    }
    return Settings.from_env(env)


def banner(settings: Settings, sims: RunningSimulators) -> str:
    base = f"http://{settings.host}:{settings.port}"
    auth = f"-H 'Authorization: Bearer {DEMO_TOKEN}'"
    return f"""
Profile gateway demo at {base}   (SQLite file: {settings.sqlite_path()})
Backend base URLs (simulators): ocamba {sims.ocamba_url}  omneo {sims.omneo_api_url}
   import_batch {sims.import_batch_api_url}   (their /_sim/* control routes are at the root)

1. Post a profile:
   curl -s -X POST {base}/v1/profiles {auth} -H 'Content-Type: application/json' \\
        -d '{{"external_id": "demo-1", "email": "jane@example.com", "first_name": "Jane",
             "phone": "+61412345678", "attributes": {{"tier": "gold"}}}}'

2. Watch it reach each backend (ocamba accepted, import_batch confirmed, omneo
   accepted then confirmed when Omneo's webhook comes back):
   curl -s {base}/v1/profiles/demo-1 {auth}

3. See what the simulators received:  curl -s {sims.omneo_url}/_sim/received
   Break a backend and watch retries:  curl -s -X PUT {sims.import_batch_url}/_sim/faults \\
        -d '{{"outage": true}}'   (and back with '{{"outage": false}}')
   Dead letters: curl -s {base}/v1/dead-letters {auth}
   Operator page: {base}/ui   (sign in with the token {DEMO_TOKEN})
   Metrics: {base}/metrics    API description: {base}/openapi.json {auth}

Stop with Ctrl-C.
"""


async def run_demo(
    host: str, port: int, database: str, sim_base_port: int = 9101, mapping: str | None = None
) -> None:
    config = SimulatorConfig(
        host=host,
        ocamba_port=sim_base_port,
        omneo_port=sim_base_port + 1,
        import_batch_port=sim_base_port + 2,
        omneo_webhook_base_url=f"http://{host}:{port}",
        omneo_webhook_secret=secrets.token_hex(16),
        omneo_processing_delay=0.5,
        import_batch_fields=demo_import_batch_fields(mapping),
    )
    async with running_simulators(config) as sims:
        settings = demo_settings(sims, host, port, database, mapping)
        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                **limit_options(settings),
                **server_options(settings.head_timeout),
            )
        )
        print(banner(settings, sims), flush=True)
        await server.serve()


def main(
    host: str, port: int, database: str, sim_base_port: int = 9101, mapping: str | None = None
) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(host, port, database, sim_base_port, mapping))
    return 0
