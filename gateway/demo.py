"""`gateway demo`: the whole flow on one machine, for a newcomer.

Embedded SQLite in the working directory, a demo token, and (as they land) the
built-in backend simulators with the gateway pointed at them.
"""

from __future__ import annotations

import asyncio

import uvicorn

from gateway.app import create_app
from gateway.config import Settings

DEMO_TOKEN = "demo-token"


def demo_settings(host: str, port: int, database: str) -> Settings:
    return Settings(
        host=host,
        port=port,
        api_tokens=f"demo:{DEMO_TOKEN}",
        database_url=f"sqlite:///{database}",
    )


def banner(settings: Settings) -> str:
    base = f"http://{settings.host}:{settings.port}"
    return f"""
Profile gateway demo running at {base} (SQLite file: {settings.sqlite_path()})

Post a profile:
  curl -s -X POST {base}/v1/profiles -H 'Authorization: Bearer {DEMO_TOKEN}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"external_id": "demo-1", "email": "jane@example.com", "first_name": "Jane"}}'

Watch its state:
  curl -s {base}/v1/profiles/demo-1 -H 'Authorization: Bearer {DEMO_TOKEN}'
Metrics: {base}/metrics    API description: {base}/openapi.json
Stop with Ctrl-C.
"""


async def run_demo(host: str, port: int, database: str) -> None:
    settings = demo_settings(host, port, database)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host=host, port=port, log_config=None)
    )
    print(banner(settings), flush=True)
    await server.serve()


def main(host: str, port: int, database: str) -> int:
    asyncio.run(run_demo(host, port, database))
    return 0
