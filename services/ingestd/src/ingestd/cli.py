"""The `ingestd` command: serve, migrate, and customer administration.

    ingestd serve                          run the HTTP server
    ingestd migrate                        apply pending migrations, then bootstrap the storage
    ingestd customers add CODE [--name N]  register a customer, print its token once
    ingestd customers list                 customers, last seen, active tokens
    ingestd customers rotate-token CODE    new token; old ones work for --grace (default 24h)
    ingestd customers revoke CODE          end every token of the customer now

Every command reads its configuration from the environment (INGESTD_DATABASE_URL, …).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from importlib.metadata import version

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
    parser = argparse.ArgumentParser(prog="ingestd", description="Fleet's central ingest server")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('ingestd')}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP server")
    sub.add_parser("migrate", help="apply pending database migrations")
    customers = sub.add_parser("customers", help="customer and token administration")
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
        return 1
    return 0


def _serve(settings: Settings) -> int:
    from aiohttp import web
    from fleetservice import configure_logging

    from ingestd.app import SERVER_OPTIONS, create_app
    from ingestd.workers import serve_workers

    configure_logging(settings.log_format, settings.log_level, service="ingestd")

    def serve_one() -> None:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            reuse_port=settings.workers > 1,
            print=None,
            access_log=None,
            shutdown_timeout=10.0,
            **SERVER_OPTIONS,
        )

    if settings.workers > 1:
        return serve_workers(settings.workers, serve_one)
    serve_one()
    return 0


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
        print(f"ingestd: storage bootstrap failed: {exc}", file=sys.stderr)
        return 1
    print(f"storage: {mode.value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"ingestd: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings)
    if args.command == "migrate":
        return _migrate(settings)
    return _customers(settings, args)


if __name__ == "__main__":
    sys.exit(main())
