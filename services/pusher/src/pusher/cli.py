"""The `pusher` command.

    pusher run       push until SIGTERM/SIGINT (does nothing unless PUSHER_PUSH_ENABLED=true)
    pusher migrate   apply pending migrations to the customer database
    pusher status    per-resource cursor, backlog, lag, failures and any blocking transaction
    pusher check     validate the configuration, the database and ingestd (token included);
                     exit 0 when pushing can work, 1 when it cannot, 2 on a configuration error
    pusher reconcile one reconciliation pass with the daemon's settings (docs/PROTOCOL.md), also
                     while the daemon runs: exit 0 when nothing differed or all was re-sent,
                     1 when the pass failed; one line says what it compared and re-sent

Every command reads its configuration from the environment (PUSHER_DATABASE_URL, …; `pusher run
--help` lists them all with their defaults). Exit status: 0 done, 1 failed (one line on stderr
says why: customer database unreachable, ingestd refusing the check…), 2 configuration or usage
error, 130 interrupted. `pusher run` retries an unreachable database or ingestd (a log line
each time) instead of exiting. No traceback for any of these unless PUSHER_LOG_LEVEL=debug.

A gateway's memory is small, so `pusher run` imports only what it runs: yoyo (migrate, check)
and numpy (PUSHER_COLUMNAR_ENCODER) are imported where they are used, and HTTP is h11 over
asyncio streams, not aiohttp; tests/pusher/test_footprint.py holds it to that. `pusher run` alone
(systemd's ExecStart) is not parsed: argparse and gettext are ~0.35 MiB; anything else is.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import psycopg
import structlog
from fleetcore.protocol import BatchType, WireFormat
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

from pusher import source
from pusher.daemon import run
from pusher.delivery import IngestClient, UploadCap, encode
from pusher.errors import ConfigError, DeliveryError, PusherError
from pusher.ops.memory import limit_arenas, use_bounded_executor
from pusher.ops.status import collect_status
from pusher.ops.systemd import SystemdNotifier
from pusher.reconcile import PassFailed, record_of, run_pass
from pusher.settings import LEGACY_PREFIX, Settings
from pusher.state import load_states
from pusher.state.reconcile_state import PassRecord, record_pass
from pusher.versions import pusher_version

if TYPE_CHECKING:
    import argparse

__all__ = ["main"]

log = structlog.get_logger("pusher")


def _parser() -> argparse.ArgumentParser:
    import argparse  # not for `pusher run` alone: _command

    raw = argparse.RawDescriptionHelpFormatter
    variables = format_variables(Settings.variables(), LEGACY_PREFIX)
    every = f"{EXIT_STATUSES}\n\n{variables}"
    parser = argparse.ArgumentParser(
        prog="pusher",
        description="Fleet's customer-side push daemon",
        epilog=every,
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {pusher_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "run",
        help="push until SIGTERM/SIGINT",
        description="Push until SIGTERM/SIGINT (nothing unless PUSHER_PUSH_ENABLED=true).",
        epilog=every,
        formatter_class=raw,
    )
    database_only = f"Reads PUSHER_DATABASE_URL (and the log settings). {EXIT_STATUSES}"
    sub.add_parser(
        "migrate",
        help="apply pending migrations to the customer database",
        description=f"Apply pending migrations to the customer database. {database_only}",
    )
    sub.add_parser(
        "status",
        help="per-resource push state as JSON",
        description=f"Per-resource push state as JSON. {database_only}",
    )
    sub.add_parser(
        "check",
        help="validate configuration, database and ingestd reachability",
        description="Validate the configuration, the customer database and ingestd (token "
        "included, with an empty batch). Reads what `pusher run` reads.",
        epilog=every,
        formatter_class=raw,
    )
    sub.add_parser(
        "reconcile",
        help="one reconciliation pass: compare with ingestd, re-send what it lost",
        description="Compare digests of the rows shipped with what ingestd holds and re-send "
        "the rows of the hours that differ, once. Reads what `pusher run` reads. Exit 0: "
        "nothing differed, or all was re-sent; 1: the pass failed.",
        epilog=every,
        formatter_class=raw,
    )
    return parser


async def _reconcile(settings: Settings) -> int:
    if not settings.enabled:
        print("FAIL push disabled (PUSHER_PUSH_ENABLED is not true)", file=sys.stderr)
        return EXIT_FAILED
    cap = settings.max_upload_bytes_per_s
    async with (
        await source.connect(
            settings.database_url, statement_timeout_s=settings.db_statement_timeout_s
        ) as conn,
        IngestClient(
            settings.ingest_url,
            settings.token,
            timeout_s=settings.request_timeout_s,
            ca_bundle=settings.ca_bundle,
            gzip_level=settings.gzip_level,
            wire_format=settings.wire_format,
            upload_cap=UploadCap(cap) if cap else None,
        ) as client,
    ):
        measurements = (await load_states(conn)).get(BatchType.MEASUREMENTS)
        client.negotiation.remember(measurements.media_type if measurements else None)
        try:
            report = await run_pass(
                conn,
                client,
                horizon=timedelta(days=settings.reconcile_horizon_days),
                batch_size=settings.batch_size,
                build=source.columnar_encoder(settings.columnar_encoder),
            )
        except PassFailed as exc:
            await record_pass(conn, PassRecord("failed", 0, 0, 0, 0, 0.0, 0, str(exc)), None)
            print(f"FAIL reconciliation: {one_line(exc)}", file=sys.stderr)
            return EXIT_FAILED
        await record_pass(conn, record_of(report), client.identity)
    print(report.line())
    return EXIT_OK


async def _serve(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    use_bounded_executor(loop)  # memory stays flat (ops/memory.py)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run(settings, stop, notifier=SystemdNotifier.from_env(os.environ))
    return 0


async def _check(settings: Settings) -> int:
    problems: list[str] = []
    try:
        async with await source.connect(settings.database_url, connect_timeout_s=10) as conn:
            await source.ping(conn)
        from pusher.migrate import pending_migrations  # yoyo: imported by migrate/check only

        pending = await asyncio.to_thread(pending_migrations, settings.database_url)
        if pending:
            problems.append(
                f"customer database has pending migrations {pending}: run `pusher migrate`"
            )
    except psycopg.Error as exc:
        problems.append(f"customer database unreachable: {one_line(exc)}")
    if not settings.enabled:
        print("push disabled (PUSHER_PUSH_ENABLED is not true); database checked only")
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
                    BatchType.MEASUREMENTS,
                    await encode(b'{"items":[]}', WireFormat.JSON, settings.gzip_level),
                    None,
                    rows=0,
                )
            except DeliveryError as exc:
                problems.append(
                    f"ingestd at {settings.shown_ingest_url} refused the check: {one_line(exc)}"
                )
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if not problems:
        print("OK")
    return EXIT_FAILED if problems else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `pusher … | head -1`: the reader has what it wanted
        return output_closed()


def _command(argv: Sequence[str] | None) -> str:
    """The command asked for: `run` alone as is, anything else (options, --help, another
    command, a mistake) parsed."""
    if list(sys.argv[1:] if argv is None else argv) == ["run"]:
        return "run"
    command: str = _parser().parse_args(argv).command
    return command


def _main(argv: Sequence[str] | None) -> int:
    command = _command(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"pusher: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(
        settings.log_format,
        settings.log_level,
        service="pusher",
        to_stderr=command != "run",  # stdout is the result: a report, OK or FAIL
        secrets=dsn_secrets(settings.database_url) + dsn_secrets(settings.ingest_url),
    )
    debug = settings.log_level == "debug"
    for old, new in settings.deprecated:
        log.warning("deprecated_variable", name=old, use=new, hint=f"rename {old} to {new}")
    try:
        if command == "migrate":
            from pusher.migrate import apply_migrations  # yoyo: imported by migrate/check only

            applied = apply_migrations(settings.database_url)
            print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
            return EXIT_OK
        if command == "status":
            report = asyncio.run(
                collect_status(
                    settings.database_url,
                    settings.blocking_txn_warn_s,
                    settings.max_upload_bytes_per_s,
                )
            )
            print(json.dumps(report, indent=2))
            return EXIT_OK
        if command == "check":
            return asyncio.run(_check(settings))
        if command == "reconcile":
            return asyncio.run(_reconcile(settings))
        limit_arenas()  # before the first thread (ops/memory.py)
        return asyncio.run(_serve(settings))
    except ConfigError as exc:  # found once running, e.g. the metrics port is taken
        if command == "run":
            log.error("start_failed", error=one_line(exc), exc_info=exc if debug else None)
            return EXIT_CONFIG
        return fail("pusher", "configuration error", exc, debug=debug)
    except PusherError as exc:
        if command == "run":
            log.error("run_failed", error=one_line(exc), exc_info=exc if debug else None)
            return EXIT_FAILED
        return fail("pusher", "failed", exc, debug=debug)
    except psycopg.OperationalError as exc:
        return fail("pusher", "customer database unreachable", exc, debug=debug)
    except psycopg.Error as exc:
        return fail("pusher", "customer database error", exc, debug=debug)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
