"""The `ingestd` command: serve, migrate, and customer administration.

    ingestd serve                          run the HTTP server
    ingestd migrate                        apply pending migrations, then bootstrap the storage
    ingestd convert-storage                convert rows stored before the scaled layout, online
    ingestd customers add CODE [--name N]  register a customer, print its token once
    ingestd customers list                 customers, last seen, active tokens
    ingestd customers rotate-token CODE    new token; old ones work for --grace (default 24h)
    ingestd customers revoke CODE          end every token of the customer now

Every command reads its configuration from the environment (INGESTD_DATABASE_URL, …; `ingestd
serve --help` lists them all with their defaults). Exit status: 0 done, 1 failed (one line on
stderr — a log line for `serve` — says why: database unreachable, bootstrap refused, unknown
customer…), 2 configuration or usage error, 130 interrupted. No traceback for any of these
unless INGESTD_LOG_LEVEL=debug.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from collections.abc import Sequence
from datetime import timedelta
from importlib.metadata import version
from typing import Any

import psycopg
import structlog
from fleetservice import configure_logging
from fleetservice.commands import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STATUSES,
    fail,
    one_line,
    output_closed,
)
from fleetservice.envconfig import format_variables
from fleetservice.redact import dsn_secrets

from ingestd.errors import StartupError
from ingestd.settings import ConfigError, Settings

__all__ = ["main"]

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    variables = format_variables(Settings.variables())
    parser = argparse.ArgumentParser(
        prog="ingestd",
        description="Fleet's central ingest server",
        epilog=f"{EXIT_STATUSES}\n\n{variables}",
        formatter_class=raw,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('fleet-ingestd')}"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "serve",
        help="run the HTTP server",
        description="Run the HTTP server until SIGTERM/SIGINT.",
        epilog=f"{EXIT_STATUSES}\n\n{variables}",
        formatter_class=raw,
    )
    sub.add_parser(
        "migrate",
        help="apply pending database migrations",
        description="Apply pending migrations, then bootstrap the storage (TimescaleDB or "
        "partitions). Reads INGESTD_DATABASE_URL and the INGESTD_TIMESCALEDB, INGESTD_CHUNK_*, "
        "INGESTD_COMPRESS_*, INGESTD_REFRESH_*, INGESTD_PARTITIONS_AHEAD and "
        "INGESTD_RETENTION_DAYS storage settings (`ingestd serve --help` lists them).",
        epilog=EXIT_STATUSES,
    )
    convert = sub.add_parser(
        "convert-storage",
        help="convert rows stored before the scaled layout to integer steps, online",
        description="Convert the values of rows stored before migration 0008 to integer steps, "
        "chunk by chunk (partition by partition) in short transactions while ingest runs; "
        "resumable (finished parts are recorded), one run at a time. docs/STORAGE.md. Reads "
        "INGESTD_DATABASE_URL and INGESTD_COMPRESS_AFTER_HOURS.",
        epilog=EXIT_STATUSES,
    )
    convert.add_argument(
        "--slice-blocks", type=int, default=1000, help="heap pages per transaction (1000)"
    )
    convert.add_argument(
        "--max-slices", type=int, default=None, help="stop after this many (run again to go on)"
    )
    customers = sub.add_parser(
        "customers",
        help="customer and token administration",
        description="Customer and token administration; reads INGESTD_DATABASE_URL.",
        epilog=EXIT_STATUSES,
    )
    csub = customers.add_subparsers(dest="action", required=True)
    add = csub.add_parser("add", help="register a customer and print its token (shown once)")
    add.add_argument("code", help="customer code, e.g. DEV0001")
    add.add_argument("--name", help="display name")
    csub.add_parser("list", help="list customers")
    rotate = csub.add_parser(
        "rotate-token", help="issue a new token; current ones expire after --grace"
    )
    rotate.add_argument("code")
    rotate.add_argument(
        "--grace", type=_duration, default=timedelta(hours=24), help="e.g. 30m, 24h, 7d"
    )
    revoke = csub.add_parser("revoke", help="end every token of the customer now")
    revoke.add_argument("code")
    return parser


def _customers(settings: Settings, args: argparse.Namespace) -> int:
    from ingestd import customers

    url = settings.database_url
    try:
        if args.action == "add":
            print(customers.add_customer(url, args.code, args.name))
            print(
                f"customer {args.code} registered; the token above is shown only once",
                file=sys.stderr,
            )
        elif args.action == "list":
            rows = customers.list_customers(url)
            print(f"{'CODE':<16} {'NAME':<24} {'LAST SEEN':<26} TOKENS")
            for c in rows:
                seen = c.last_seen_at.isoformat(timespec="seconds") if c.last_seen_at else "never"
                print(f"{c.code:<16} {(c.name or ''):<24} {seen:<26} {c.active_tokens}")
        elif args.action == "rotate-token":
            print(customers.rotate_token(url, args.code, args.grace))
            print(
                f"new token for {args.code}; previous tokens expire in {args.grace}",
                file=sys.stderr,
            )
        elif args.action == "revoke":
            count = customers.revoke_tokens(url, args.code)
            print(f"revoked {count} token(s) of {args.code}")
    except (customers.CustomerExists, customers.UnknownCustomer, ValueError) as exc:
        print(f"ingestd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening TCP socket (the public port, and INGESTD_ADMIN_PORT when set)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _serve(settings: Settings) -> int:
    """Run the server; a failed start is one log line (`start_failed`) and exit status 1."""
    from aiohttp import web

    from ingestd.app import SERVER_OPTIONS, create_app
    from ingestd.heap import keep_freed_memory
    from ingestd.storage import BootstrapError
    from ingestd.workers import serve_workers

    configure_logging(
        settings.log_format,
        settings.log_level,
        service="ingestd",
        secrets=dsn_secrets(settings.database_url),
    )

    keep_freed_memory()  # a large batch's buffers kept for the next (ingestd.heap)

    def serve_one() -> None:
        import uvloop  # the event loop: ~5 % less CPU per small batch than asyncio's own

        try:
            reuse = settings.workers > 1
            ports = [settings.port, *([settings.admin_port] if settings.admin_port else [])]
            web.run_app(
                create_app(settings),
                sock=[_listen(settings.host, port, reuse) for port in ports],
                print=None,
                access_log=None,
                shutdown_timeout=10.0,
                loop=uvloop.new_event_loop(),
                **SERVER_OPTIONS,
            )
        except (StartupError, BootstrapError, psycopg.Error, OSError) as exc:
            structlog.get_logger("ingestd").error(
                "start_failed",
                error=one_line(exc),
                exc_info=exc if settings.log_level == "debug" else None,
            )
            raise SystemExit(EXIT_FAILED) from None

    if settings.workers > 1:
        return serve_workers(settings.workers, serve_one)
    try:
        serve_one()
    except SystemExit as exc:
        return int(exc.code or 0)
    return EXIT_OK


def _migrate(settings: Settings) -> int:
    """Apply the migrations, then bootstrap the storage (TimescaleDB or partitions)."""
    import asyncio

    from ingestd.migrate import apply_migrations
    from ingestd.storage import BootstrapError, bootstrap_database

    applied = apply_migrations(settings.database_url)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    try:
        mode = asyncio.run(bootstrap_database(settings.database_url, settings.storage))
    except BootstrapError as exc:
        return fail("ingestd", "storage bootstrap failed", exc)
    print(f"storage: {mode.value}")
    return EXIT_OK


def _convert_storage(settings: Settings, args: argparse.Namespace) -> int:
    """Convert the rows stored before the scaled layout; one line per part, then a summary."""
    import asyncio
    import time as clock

    from ingestd.storage.conversion import PartReport, convert_stored_rows

    if args.slice_blocks < 1 or (args.max_slices is not None and args.max_slices < 1):
        print("ingestd: --slice-blocks and --max-slices must be at least 1", file=sys.stderr)
        return EXIT_CONFIG

    def show(part: PartReport) -> None:
        again = ", compressed again" if part.recompressed else ""
        print(f"{part.part}: {part.rows:,} rows in {part.seconds:.1f} s{again}", flush=True)

    async def run() -> Any:
        async with await psycopg.AsyncConnection.connect(
            settings.database_url, autocommit=True
        ) as conn:
            return await convert_stored_rows(
                conn,
                compress_after=settings.storage.compress_after,
                slice_blocks=args.slice_blocks,
                max_slices=args.max_slices,
                progress=show,
            )

    started = clock.monotonic()
    try:
        report = asyncio.run(run())
    except RuntimeError as exc:
        return fail("ingestd", "convert-storage refused", exc)
    seconds = clock.monotonic() - started
    per_10m = seconds / 60 * 10_000_000 / report.rows if report.rows else 0.0
    state = "done" if report.complete else "stopped at --max-slices (run again to go on)"
    print(
        f"{state}: {report.rows:,} rows converted in {len(report.parts)} part(s), "
        f"{report.skipped} skipped, {seconds:.1f} s ({per_10m:.1f} min per 10 M rows)"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `ingestd … | head -1`: the reader has what it wanted
        return output_closed()


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"ingestd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    debug = settings.log_level == "debug"
    try:
        if args.command == "serve":
            return _serve(settings)
        configure_logging(
            settings.log_format,
            settings.log_level,
            service="ingestd",
            to_stderr=True,
            secrets=dsn_secrets(settings.database_url),
        )
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "convert-storage":
            return _convert_storage(settings, args)
        return _customers(settings, args)
    except psycopg.OperationalError as exc:
        return fail("ingestd", "database unreachable", exc, debug=debug)
    except psycopg.Error as exc:
        return fail("ingestd", "database error", exc, debug=debug)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
