"""The `pusher` command.

    pusher run       push until SIGTERM/SIGINT (does nothing unless FLEET_PUSH_ENABLED=true)
    pusher migrate   apply pending migrations to the customer database
    pusher status    per-resource cursor, backlog, lag, failures and any blocking transaction
    pusher check     validate the configuration, the database and ingestd (token included);
                     exit 0 when pushing can work, 1 when it cannot, 2 on a configuration error

Every command reads its configuration from the environment (FLEET_DATABASE_URL, …).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import version

import psycopg
import structlog
from fleetcore.protocol import BatchType
from fleetservice import configure_logging

from pusher import source
from pusher.daemon import run
from pusher.delivery import IngestClient
from pusher.errors import ConfigError, DeliveryError, PusherError
from pusher.migrate import apply_migrations, pending_migrations
from pusher.settings import Settings
from pusher.status import collect_status
from pusher.systemd import SystemdNotifier

__all__ = ["main"]

log = structlog.get_logger("pusher")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pusher", description="Fleet's customer-side push daemon")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('pusher')}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="push until SIGTERM/SIGINT")
    sub.add_parser("migrate", help="apply pending migrations to the customer database")
    sub.add_parser("status", help="per-resource push state as JSON")
    sub.add_parser("check", help="validate configuration, database and ingestd reachability")
    return parser


async def _serve(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run(settings, stop, notifier=SystemdNotifier.from_env(os.environ))
    return 0


async def _check(settings: Settings) -> int:
    problems: list[str] = []
    try:
        async with await source.connect(settings.database_url, connect_timeout_s=10) as conn:
            await conn.execute("SELECT 1")
        pending = await asyncio.to_thread(pending_migrations, settings.database_url)
        if pending:
            problems.append(
                f"customer database has pending migrations {pending}: run `pusher migrate`"
            )
    except psycopg.Error as exc:
        problems.append(f"customer database unreachable: {str(exc).strip()}")
    if not settings.enabled:
        print("push disabled (FLEET_PUSH_ENABLED is not true); database checked only")
    else:
        # An empty measurements batch is harmless and proves URL, TLS and token in one request.
        async with IngestClient(
            settings.ingest_url,
            settings.token,
            timeout_s=min(settings.request_timeout_s, 15.0),
            ca_bundle=settings.ca_bundle,
        ) as client:
            try:
                await client.send(
                    BatchType.MEASUREMENTS, await client.compress(b'{"items":[]}'), None
                )
            except DeliveryError as exc:
                problems.append(f"ingestd at {settings.ingest_url} refused the check: {exc.detail}")
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if not problems:
        print("OK")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"pusher: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level, service="pusher")
    try:
        if args.command == "migrate":
            applied = apply_migrations(settings.database_url)
            print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
            return 0
        if args.command == "status":
            report = asyncio.run(
                collect_status(settings.database_url, settings.blocking_txn_warn_s)
            )
            print(json.dumps(report, indent=2))
            return 0
        if args.command == "check":
            return asyncio.run(_check(settings))
        return asyncio.run(_serve(settings))
    except PusherError as exc:
        log.error("pusher failed", error=str(exc))
        return 1
    except psycopg.OperationalError as exc:
        print(f"pusher: customer database unreachable: {str(exc).strip()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
