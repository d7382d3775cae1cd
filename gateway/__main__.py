"""The `gateway` command: serve, migrate, and the tools around them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

import msgspec

from gateway import cli_auth, cli_dead_letters, cli_keys, cli_mapping, logs
from gateway.bulk_import import cli as cli_import
from gateway.config import SECRET_SETTINGS, ConfigError, Settings, describe
from gateway.mapping.load import MappingError, mappings_for


def _env_help() -> str:
    rows = "\n".join(f"  {var:<44} default {default}" for var, default in describe())
    files = ", ".join("GATEWAY_" + name.upper() for name in SECRET_SETTINGS)
    return (
        "settings (environment variables):\n"
        + rows
        + "\n\nEach of these may instead be read from a file named by the variable + _FILE"
        + f" (one trailing newline stripped): {files}"
    )


def _field_list(text: str) -> tuple[str, ...]:
    fields = tuple(name.strip() for name in text.split(",") if name.strip())
    if not fields:
        raise argparse.ArgumentTypeError("name at least one field")
    return fields


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Profile fan-out gateway: accepts customer profiles in one schema, "
        "stores them durably and delivers them to Ocamba Hood, Omneo and import_batch.",
        epilog=_env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP API (settings from GATEWAY_* variables)")
    serve.add_argument("--host", help="bind address (GATEWAY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (GATEWAY_PORT, default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (GATEWAY_WORKERS, default 1)")

    sub.add_parser("migrate", help="create or upgrade the database schema, then exit")

    demo = sub.add_parser(
        "demo", help="run the gateway with embedded SQLite and the backend simulators"
    )
    demo.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    demo.add_argument(
        "--database", default="demo.db", help="SQLite file (default demo.db in the working dir)"
    )
    demo.add_argument(
        "--sim-base-port",
        type=int,
        default=9101,
        help="simulators listen on this port (Ocamba) and the next two (Omneo, import_batch)",
    )
    demo.add_argument(
        "--mapping",
        metavar="FILE",
        help="a mapping file for the demo's gateway (e.g. docs/mapping.example.toml);"
        " default: the built-in mapping",
    )
    simulate = sub.add_parser(
        "simulate", help="run the three backend simulators (Ocamba, Omneo, import_batch)"
    )
    simulate.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    simulate.add_argument("--ocamba-port", type=int, default=9101, help="default 9101")
    simulate.add_argument("--omneo-port", type=int, default=9102, help="default 9102")
    simulate.add_argument("--import-batch-port", type=int, default=9103, help="default 9103")
    simulate.add_argument(
        "--webhook-base-url",
        help="where Omneo's webhooks go, e.g. http://127.0.0.1:8080 (default: none sent)",
    )
    simulate.add_argument(
        "--webhook-secret", default="", help="HMAC secret the Omneo simulator signs with"
    )
    simulate.add_argument(
        "--ocamba-per-second", type=int, default=10, help="Ocamba burst limit (default 10)"
    )
    simulate.add_argument(
        "--ocamba-per-minute", type=int, default=150, help="Ocamba steady limit (default 150)"
    )
    simulate.add_argument(
        "--ocamba-minute-window",
        type=float,
        default=60.0,
        help="length of Ocamba's steady window in seconds (default 60; shorter for tests)",
    )
    simulate.add_argument(
        "--import-batch-fields",
        type=_field_list,
        default=None,
        metavar="NAME,...",
        help="the import_batch database's custom fields; data naming any other field is"
        " refused per profile (default external_id,tier,since: what the gateway's"
        " default mapping and the demo's examples send)",
    )
    simulate.add_argument(
        "--omneo-processing-delay",
        type=float,
        default=0.05,
        help="seconds Omneo takes before processing a batch and sending webhooks",
    )

    cli_dead_letters.add_parser(sub)
    cli_keys.add_parser(sub)
    cli_auth.add_parser(sub)
    cli_import.add_parser(sub)
    cli_mapping.add_parser(sub)
    return parser


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from gateway import serving

    # Checked here, before any worker starts, so a bad file stops the process
    # with its problems listed rather than a worker's traceback.
    mappings_for(settings)

    settings = msgspec.structs.replace(
        settings,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers or settings.workers,
    )
    return serving.serve(settings)


def _migrate(settings: Settings) -> int:
    from gateway.store.factory import store_from_settings

    async def run() -> None:
        # Migrating is this command's whole job, whatever GATEWAY_MIGRATE_ON_START says.
        store = store_from_settings(msgspec.structs.replace(settings, migrate_on_start=True))
        await store.open()
        await store.close()

    asyncio.run(run())
    print(f"schema is up to date: {settings.database_url}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from gateway.simulators.runner import RunningSimulators, SimulatorConfig, run_simulators

    def ready(sims: RunningSimulators) -> None:
        print("simulators running; point the gateway at them with:", flush=True)
        for var, value in sims.gateway_env().items():
            print(f"  export {var}={value}", flush=True)

    config = SimulatorConfig(
        host=args.host,
        ocamba_port=args.ocamba_port,
        omneo_port=args.omneo_port,
        import_batch_port=args.import_batch_port,
        omneo_webhook_base_url=args.webhook_base_url,
        omneo_webhook_secret=args.webhook_secret,
        ocamba_per_second=args.ocamba_per_second,
        ocamba_per_minute=args.ocamba_per_minute,
        ocamba_minute_window=args.ocamba_minute_window,
        omneo_processing_delay=args.omneo_processing_delay,
    )
    if args.import_batch_fields is not None:
        config = msgspec.structs.replace(config, import_batch_fields=args.import_batch_fields)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_simulators(config, on_ready=ready))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "generate-token":  # needs no settings, so works with bad ones
        return cli_auth.main(Settings(), args)
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_level)
        return _run(parser, args, settings)
    except ConfigError as exc:
        # One line naming the variable: a traceback would bury it.
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except MappingError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 2


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "mapping":
        return cli_mapping.main(settings, args)
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "dead-letters":
        return cli_dead_letters.main(settings, args)
    if args.command in cli_keys.COMMANDS:
        return cli_keys.main(settings, args)
    if args.command in cli_auth.COMMANDS:
        return cli_auth.main(settings, args)
    if args.command == "import":
        return cli_import.main(args)
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "demo":
        from gateway import demo

        if args.mapping:
            # Checked before the simulators start, as `serve` does.
            mappings_for(msgspec.structs.replace(settings, mapping_file=args.mapping))
        return demo.main(args.host, args.port, args.database, args.sim_base_port, args.mapping)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
