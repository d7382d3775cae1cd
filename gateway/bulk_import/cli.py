"""`gateway import FILE`: the argparse front of the bulk import.

The token comes from a file or the environment, never from the command line:
every user of the machine can read another's command line in `ps`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway.bulk_import.csv_mapping import MAPPING_HELP
from gateway.bulk_import.readers import FORMATS, ReadError, detect_format
from gateway.bulk_import.runner import EXIT_ERROR, Options, run
from gateway.schema import BACKENDS, LANES, MAX_BATCH

TOKEN_ENV = "GATEWAY_BACKFILL_TOKEN"

_DESCRIPTION = """\
Stream an NDJSON or CSV file of profiles into a running gateway, in batches of
POST /v1/profiles/batch. The file is read as a stream (any size, flat memory).
Rows the gateway would refuse are checked locally with the gateway's own rules
and written, with their field errors and file line, to the errors file.

Lane: every batch says "priority": "bulk" unless --priority realtime, so the
gateway sends the apps' real-time writes before the backfill.

Resuming: after each batch the gateway acknowledges, a checkpoint beside the
file records how far it got. Run the same command again after an interrupt
(Ctrl-C, a kill, a crash) and it goes on from there. Each batch carries an
Idempotency-Key derived from the run and its lines, so a batch that was in
flight when the run stopped is answered from the gateway's record when it is
sent again: no row is stored twice.

NDJSON: one profile object per line, exactly as POST /v1/profiles takes it.
"""

_EPILOG = f"""\
{MAPPING_HELP}

files (FILE is the input):
  FILE.import-checkpoint.json     progress; kept, marked complete, at the end
  FILE.errors.ndjson              rejected rows, one JSON line each:
                                  {{"line", "errors": [{{"path", "message"}}], "row"}}

exit status: 0 every row stored; 1 some rows rejected (see the errors file);
  2 bad usage, unreadable file, or the gateway refused the import (run again to
  resume once fixed); 130 interrupted (run again to resume)

examples:
  export {TOKEN_ENV}=...      # or --token-file PATH
  gateway import customers.ndjson --url http://gw.internal:8080
  gateway import crm-export.csv --targets omneo,import_batch --concurrency 8
  gateway import crm-export.csv --validate-only     # check the file, send nothing
  gateway import fixes.ndjson --priority realtime   # a small fix, ahead of backfills
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "import",
        help="bulk backfill: stream an NDJSON or CSV file into a running gateway, resumable",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the .ndjson/.jsonl or .csv file")
    p.add_argument(
        "--format", choices=FORMATS, help="the file's format (default: from its extension)"
    )
    p.add_argument(
        "--url",
        default="http://127.0.0.1:8080",
        help="the gateway's base URL (default http://127.0.0.1:8080)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the bearer token (default: the {TOKEN_ENV} variable)",
    )
    p.add_argument(
        "--targets",
        help=f"comma-separated backends ({', '.join(BACKENDS)}); default: every configured one",
    )
    p.add_argument(
        "--priority",
        choices=LANES,
        default="bulk",
        help="the lane every batch waits in: bulk (the default) lets real-time writes of "
        "every app go first; realtime sends the import as if an app wrote it",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=MAX_BATCH,
        help=f"rows per request, 1-{MAX_BATCH} (default {MAX_BATCH})",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=4_000_000,
        help="a batch is cut before its body passes this; keep it under the gateway's "
        "GATEWAY_MAX_BODY_BYTES (default 4000000)",
    )
    p.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight at once (default 4)"
    )
    p.add_argument("--errors", type=Path, help="errors file (default FILE.errors.ndjson)")
    p.add_argument(
        "--checkpoint", type=Path, help="checkpoint file (default FILE.import-checkpoint.json)"
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="ignore the checkpoint and import from the first line under new idempotency keys "
        "(rows already stored are sent again)",
    )
    p.add_argument(
        "--validate-only",
        action="store_true",
        help="read and check the file, write FILE.validation-errors.ndjson; send nothing",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        return str(args.token_file.read_text()).strip()
    return os.environ.get(TOKEN_ENV, "").strip()


def _targets(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    targets = [t.strip() for t in raw.split(",") if t.strip()]
    unknown = [t for t in targets if t not in BACKENDS]
    if unknown or not targets:
        raise ValueError(f"--targets takes {', '.join(BACKENDS)}; got {raw!r}")
    return targets


def main(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        fmt = detect_format(path, args.format)
        targets = _targets(args.targets)
        if not args.url.startswith(("http://", "https://")):
            raise ValueError(f"--url must start with http:// or https://, got {args.url!r}")
        if not 1 <= args.batch_size <= MAX_BATCH:
            raise ValueError(f"--batch-size must be 1 to {MAX_BATCH}")
        if args.concurrency < 1 or args.max_body_bytes < 1024 or args.timeout <= 0:
            raise ValueError("--concurrency, --max-body-bytes and --timeout must be positive")
        token = "" if args.validate_only else _token(args)
    except (ReadError, ValueError) as exc:
        print(f"gateway import: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"gateway import: cannot read the token file: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    errors_name = ".validation-errors.ndjson" if args.validate_only else ".errors.ndjson"
    opts = Options(
        path=path,
        format=fmt,
        url=args.url,
        token=token,
        targets=targets,
        priority=args.priority,
        batch_size=args.batch_size,
        max_body_bytes=args.max_body_bytes,
        concurrency=args.concurrency,
        errors_path=args.errors or path.with_name(path.name + errors_name),
        checkpoint_path=args.checkpoint or path.with_name(path.name + ".import-checkpoint.json"),
        restart=args.restart,
        quiet=args.quiet,
        validate_only=args.validate_only,
        timeout=args.timeout,
    )
    return run(opts)
