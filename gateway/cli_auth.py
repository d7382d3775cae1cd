"""`gateway generate-token` and `gateway revoke-sessions`."""

from __future__ import annotations

import argparse
import asyncio
import secrets

from gateway.auth.tokens import SCOPES
from gateway.config import Settings
from gateway.store.factory import store_from_settings

COMMANDS = ("generate-token", "revoke-sessions")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = sub.add_parser(
        "generate-token", help="print a new random API token (43 characters) for GATEWAY_API_TOKENS"
    )
    gen.add_argument("--app", help="print a whole GATEWAY_API_TOKENS entry for this app")
    gen.add_argument(
        "--scopes",
        help=f"with --app: its scopes, joined with '+' ({', '.join(SCOPES)}; default write)",
    )
    sub.add_parser(
        "revoke-sessions",
        help="sign every operator page (/ui) session out, on every replica sharing the store",
    )


def main(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "generate-token":
        token = secrets.token_urlsafe(32)
        if args.app:
            token = f"{args.app}:{token}" + (f":{args.scopes}" if args.scopes else "")
        print(token)
        return 0

    async def revoke() -> int:
        store = store_from_settings(settings)
        await store.open()
        try:
            return await store.end_all_ui_sessions()
        finally:
            await store.close()

    print(f"{asyncio.run(revoke())} operator page sessions ended")
    return 0
