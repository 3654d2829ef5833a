"""The local two-stack demo (`make dev`): a customer meter stack and the central stack, on one laptop.

    python -m fleetdev.devstack [--state-dir .state/dev] [--duration 0] [--interval 2]

Starts two PostgreSQL clusters under the state folder (customer and central), migrates both with
the services' own commands, registers customer DEV0001 (its token kept in the state folder, mode
0600, like the read API's admin token unless INGESTD_ADMIN_TOKEN is given), then starts `ingestd serve`, the meter simulator and `pusher run`, and prints every few
seconds what is flowing: rows stored locally, rows arrived centrally, rows still to ship, lag and
the last batch. Ctrl-C (or --duration) stops everything it started. A second run reuses the
state (ports, URLs and the central storage path in `stack.json`, every log in `logs/`);
`make clean` removes it. Every process talks to 127.0.0.1 only. A step that fails is one line
naming it, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import psycopg

from fleetdev.devstate import StackState
from fleetdev.devstatus import central_storage_found, format_final, format_status, read_status
from fleetdev.pgcluster import PgCluster, timescaledb_installed

__all__ = ["main"]

CUSTOMER_CODE = "DEV0001"


class DevStackError(RuntimeError):
    """A step of the dev stack failed; the message says which and why."""


def _say(message: str) -> None:
    print(f"[devstack] {message}", flush=True)


def _run(cmd: Sequence[str], env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise DevStackError(
            f"{' '.join(cmd[2:])} failed: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout


def _wait_http(url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310
            if resp.status == 200:  # (a loopback URL this module built)
                return
        time.sleep(0.2)
    raise DevStackError(f"{url} did not become ready in {deadline_s:g} s")


@contextlib.contextmanager
def _cluster(
    datadir: Path, port: int, log_file: Path, timescaledb: bool = False
) -> Iterator[PgCluster]:
    cluster = PgCluster(datadir=datadir, port=port, timescaledb=timescaledb, log_file=log_file)
    cluster.init()
    if not cluster.running:
        cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop("fast")


@contextlib.contextmanager
def _process(
    name: str, cmd: Sequence[str], env: dict[str, str], log_dir: Path
) -> Iterator[subprocess.Popen[bytes]]:
    log_file: IO[bytes] = (log_dir / f"{name}.log").open("ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log_file.close()


@contextlib.contextmanager
def _central(state: StackState, central: str) -> Iterator[str]:
    """The central database: the TimescaleDB image through Docker (`central="timescale"`, when an
    engine answers), else a local cluster (with TimescaleDB when it is installed here)."""
    if central == "timescale":
        from fleetdev.dockercentral import central_container

        container = central_container(state.central_port, state.root / "central.password", _say)
        if container is not None:
            try:
                yield container.dsn
            finally:
                container.stop()
            return
    with _cluster(
        state.root / "central-pg",
        state.central_port,
        state.logs / "central-postgresql.log",
        timescaledb_installed(),
    ) as cluster:
        yield cluster.create_database("fleet")


def _passed_through(prefixes: tuple[str, ...]) -> dict[str, str]:
    """The developer's own settings for a service (e.g. INGESTD_LOG_LEVEL=debug make dev)."""
    return {k: v for k, v in os.environ.items() if k.startswith(prefixes)}


def _central_storage(central_dsn: str) -> dict[str, str]:
    """INGESTD_TIMESCALEDB for this state: the developer's, else the path the state was made on.

    A state bootstrapped on plain PostgreSQL stays plain once TimescaleDB is installed: converting
    the central table is a manual migration, and the dev data is throwaway anyway.
    """
    if "INGESTD_TIMESCALEDB" in os.environ:
        return {}
    found = central_storage_found(central_dsn)
    if found == "postgresql":
        if timescaledb_installed():
            _say(
                "central storage stays plain PostgreSQL: this state was created without "
                "TimescaleDB; `make clean && make dev` starts over on TimescaleDB (the dev data "
                "is dropped)"
            )
        return {"INGESTD_TIMESCALEDB": "off"}
    return {}


def _admin_token(state: StackState) -> dict[str, str]:
    """INGESTD_ADMIN_TOKEN for the read API: the developer's, else one kept in the state folder."""
    if "INGESTD_ADMIN_TOKEN" in os.environ:
        return {}
    if not state.admin_token_file.exists():
        state.admin_token_file.write_text(secrets.token_urlsafe(32) + "\n")
        state.admin_token_file.chmod(0o600)
    return {"INGESTD_ADMIN_TOKEN": state.admin_token_file.read_text().strip()}


def _hint_clis(state: StackState) -> None:
    bindir = Path(sys.executable).parent
    root = state.root
    with contextlib.suppress(ValueError):
        bindir = bindir.relative_to(Path.cwd())
    with contextlib.suppress(ValueError):
        root = root.relative_to(Path.cwd())
    _say(
        f"try: INGESTD_DATABASE_URL={state.central_url} {bindir}/ingestd customers list"
        f"   (URLs saved in {state.root / 'stack.json'})"
    )
    token = (
        "$INGESTD_ADMIN_TOKEN"
        if "INGESTD_ADMIN_TOKEN" in os.environ
        else f"$(cat {root / state.admin_token_file.name})"
    )
    _say(
        f'read API: curl -H "Authorization: Bearer {token}" {state.ingest_url}/api/fleet/customers'
    )


def run(
    state_dir: Path,
    duration_s: float,
    interval_s: float,
    sim_interval_s: float,
    push_interval_s: float,
    central: str = "local",
) -> int:
    state = StackState.load(state_dir.resolve())
    logs = state.logs
    logs.mkdir(exist_ok=True)
    base_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "PUSHER_", "FLEET_"))
    }
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    _say(f"state in {state.root} (make clean removes it); logs in {logs}")
    with (
        _cluster(
            state.root / "customer-pg", state.customer_port, logs / "customer-postgresql.log"
        ) as customer_pg,
        _central(state, central) as central_dsn,
    ):
        customer_dsn = customer_pg.create_database("meters")
        state.customer_url, state.central_url = customer_dsn, central_dsn
        state.ingest_url = f"http://127.0.0.1:{state.ingest_port}"
        state.save()
        _say(f"customer stack  {customer_dsn}")
        _say(f"central stack   {central_dsn}")
        ingest_env = {
            **base_env,
            **_passed_through(("INGESTD_",)),
            **_central_storage(central_dsn),
            **_admin_token(state),
            "INGESTD_DATABASE_URL": central_dsn,
            "INGESTD_HOST": "127.0.0.1",
            "INGESTD_PORT": str(state.ingest_port),
            "INGESTD_LOG_FORMAT": "json",
        }
        migrated = _run([sys.executable, "-m", "ingestd", "migrate"], ingest_env)
        state.central_storage = migrated.rpartition("storage: ")[2].strip() or None
        state.save()
        _say(f"central storage: {state.central_storage}")
        if not state.token_file.exists():
            token = _run(
                [sys.executable, "-m", "ingestd", "customers", "add", CUSTOMER_CODE,
                 "--name", "Development"],
                ingest_env,
            ).strip()  # fmt: skip
            state.token_file.write_text(token + "\n")
            state.token_file.chmod(0o600)
            _say(f"registered customer {CUSTOMER_CODE}; token saved to {state.token_file}")
        push_env = {
            **base_env,
            **_passed_through(("PUSHER_",)),
            "PUSHER_DATABASE_URL": customer_dsn,
            "PUSHER_PUSH_ENABLED": "true",
            "PUSHER_INGEST_URL": state.ingest_url,
            "PUSHER_TOKEN_FILE": str(state.token_file),
            "PUSHER_PUSH_INTERVAL_S": str(push_interval_s),
            "PUSHER_BACKOFF_BASE_S": "2",
            "PUSHER_BACKOFF_CAP_S": "30",
            "PUSHER_LOG_FORMAT": "json",
        }
        _run([sys.executable, "-m", "pusher", "migrate"], push_env)
        sim_cmd = [sys.executable, "-m", "fleetdev.simulator", "--database-url", customer_dsn,
                   "--interval", str(sim_interval_s), "--offline-every", "40", "--offline-for", "10"]  # fmt: skip
        with (
            _process("ingestd", [sys.executable, "-m", "ingestd", "serve"], ingest_env, logs),
            _process("simulator", sim_cmd, base_env, logs),
        ):
            _wait_http(f"{state.ingest_url}/readyz", 30)
            _say(f"ingestd on {state.ingest_url}")
            _hint_clis(state)
            with _process(
                "pusher", [sys.executable, "-m", "pusher", "run"], push_env, logs
            ) as pusher:
                _say(
                    "meters simulated, pusher pushing, ingestd ingesting — Ctrl-C stops everything"
                )
                started = time.monotonic()
                while not stop_requested and (
                    not duration_s or time.monotonic() - started < duration_s
                ):
                    time.sleep(interval_s)
                    if pusher.poll() is not None:
                        _say(f"pusher exited with {pusher.returncode}; see {logs / 'pusher.log'}")
                        return 1
                    try:
                        _say(format_status(read_status(customer_dsn, central_dsn, sim_interval_s)))
                    except psycopg.Error as exc:
                        _say(f"status unavailable: {exc}")
                final = read_status(customer_dsn, central_dsn, sim_interval_s)
    _say(format_final(final))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fleetdev.devstack", description="Fleet's local two-stack demo"
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".state/dev"))
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after N seconds (0: until Ctrl-C)"
    )
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between status lines")
    parser.add_argument(
        "--sim-interval", type=float, default=2.0, help="seconds between meter readings"
    )
    parser.add_argument("--push-interval", type=float, default=5.0, help="pusher tick in seconds")
    parser.add_argument(
        "--central",
        choices=["local", "timescale"],
        default="local",
        help="timescale: run the central database on the TimescaleDB image (needs a Docker engine)",
    )
    args = parser.parse_args(argv)
    try:
        return run(
            args.state_dir,
            args.duration,
            args.interval,
            args.sim_interval,
            args.push_interval,
            args.central,
        )
    except (RuntimeError, psycopg.Error, OSError) as exc:  # DevStackError, PgClusterError…
        _say(f"failed: {exc}")
        _say(f"logs: {args.state_dir / 'logs'}; `make clean` starts over from nothing")
        return 1


if __name__ == "__main__":
    sys.exit(main())
