"""`gateway mapping check|show|preview`: the mapping file, before any gateway runs it."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import msgspec

from gateway.backends.preview import Refused, requests_for
from gateway.config import Settings
from gateway.mapping.load import MappingError, mappings_for
from gateway.mapping.model import Mappings
from gateway.schema import BACKENDS, Backend
from gateway.validation import InvalidInput, parse_single

FILE_HELP = "the mapping file (default: GATEWAY_MAPPING_FILE; neither: the built-in mapping)"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mapping = sub.add_parser(
        "mapping",
        help="check a mapping file, or preview what each backend would get",
        description="The mapping file (TOML) says which profile fields reach which backend"
        " and under which names; see the README's 'Mapping file'. Nothing here sends"
        " anything or opens the database.",
    )
    actions = mapping.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate a file: exit 0, or 2 with every problem, one a line",
        description="Validates FILE as `gateway serve` does at start. Exit 0 when it is"
        " usable; otherwise exit 2, each problem on stderr as FILE: PATH: MESSAGE.",
    )
    check.add_argument("file", nargs="?", metavar="FILE", help=FILE_HELP)
    show = actions.add_parser(
        "show",
        help="print the mapping in force, defaults filled in, as JSON",
        description="Prints the resolved mapping (what the operator page shows): every"
        " table complete, defaults and GATEWAY_* settings merged in.",
    )
    show.add_argument("file", nargs="?", metavar="FILE", help=FILE_HELP)
    preview = actions.add_parser(
        "preview",
        help="print the request body (or bodies) a backend would get for a profile",
        description="Reads one profile from stdin (the body of POST /v1/profiles) and"
        " prints, for --backend, each request path and the exact JSON body the gateway"
        " would send, in order (Ocamba: create, then import). Nothing is sent. Exit 1"
        " when the gateway would fail that delivery without sending it (the reason is"
        " printed), 2 for a bad profile or mapping file.",
        epilog="example: gateway mapping preview --backend import_batch mapping.toml"
        " < profile.json",
    )
    preview.add_argument("--backend", required=True, choices=BACKENDS, help="which backend")
    preview.add_argument(
        "--backend-id",
        help="the id the backend already gave this person (Ocamba: no create, only the"
        " import; import_batch: its profile_id when matching by it)",
    )
    preview.add_argument("file", nargs="?", metavar="FILE", help=FILE_HELP)


def _load(settings: Settings, file: str | None) -> Mappings:
    if file is not None:
        settings = msgspec.structs.replace(settings, mapping_file=file)
    return mappings_for(settings)


def main(
    settings: Settings,
    args: argparse.Namespace,
    *,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    try:
        mapping = _load(settings, args.file)
    except MappingError as exc:
        for line in exc.lines():
            print(line, file=err)
        return 2
    if args.action == "check":
        print(f"{mapping.source or 'built-in mapping'}: ok", file=out)
        return 0
    if args.action == "show":
        print(_json(msgspec.to_builtins(mapping, order="deterministic")), file=out)
        return 0
    return _preview(settings, mapping, args.backend, args.backend_id, stdin.read(), out, err)


def _preview(
    settings: Settings,
    mapping: Mappings,
    backend: Backend,
    backend_id: str | None,
    text: str,
    out: TextIO,
    err: TextIO,
) -> int:
    try:
        (profile,) = parse_single(msgspec.json.decode(text), BACKENDS).profiles
    except msgspec.DecodeError as exc:
        print(f"stdin: not JSON: {exc}", file=err)
        return 2
    except InvalidInput as exc:
        for error in exc.errors:
            print(f"stdin: {error.path or '$'}: {error.message}", file=err)
        return 2
    try:
        requests = requests_for(backend, profile, mapping, settings, backend_id=backend_id)
    except Refused as exc:
        print(f"{backend} would not be sent this profile: {exc}", file=err)
        return 1
    for request in requests:
        print(f"POST {request.path}", file=out)
        print(_json(request.body), file=out)
    return 0


def _json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
