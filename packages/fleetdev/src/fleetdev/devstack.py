"""The local two-stack demo (`make dev`): a customer meter stack and the central stack, on one laptop.

    python -m fleetdev.devstack [--state-dir .state/dev] [--duration 0] [--interval 2]

Starts two PostgreSQL clusters under the state folder (customer and central), migrates both with
the services' own commands, registers customer DEV0001 (its token kept in the state folder, mode
0600), then starts `ingestd serve`, the meter simulator and `pusher run`, and prints every few
seconds what is flowing: rows stored locally, rows arrived centrally, rows still to ship, lag and
the last batch. Ctrl-C (or --duration) stops everything it started. A second run reuses the
state; `make clean` removes it. Every process talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg

from fleetdev.pgcluster import PgCluster, free_port, timescaledb_installed

__all__ = ["main"]

CUSTOMER_CODE = "DEV0001"


@dataclass
class StackState:
    """What a second run must find again: ports and the customer's token file."""

    root: Path
    customer_port: int
    central_port: int
    ingest_port: int

    @classmethod
    def load(cls, root: Path) -> StackState:
        root.mkdir(parents=True, exist_ok=True)
        path = root / "stack.json"
        if path.exists():
            data = json.loads(path.read_text())
            return cls(root, data["customer_port"], data["central_port"], data["ingest_port"])
        state = cls(root, free_port(), free_port(), free_port())
        path.write_text(
            json.dumps(
                {
                    "customer_port": state.customer_port,
                    "central_port": state.central_port,
                    "ingest_port": state.ingest_port,
                }
            )
        )
        return state

    @property
    def token_file(self) -> Path:
        return self.root / "DEV0001.token"


def _say(message: str) -> None:
    print(f"[devstack] {message}", flush=True)


def _run(cmd: Sequence[str], env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _wait_http(url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310
            if resp.status == 200:  # (a loopback URL this module built)
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready in {deadline_s:g} s")


@contextlib.contextmanager
def _cluster(datadir: Path, port: int, timescaledb: bool = False) -> Iterator[PgCluster]:
    cluster = PgCluster(datadir=datadir, port=port, timescaledb=timescaledb)
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


def _status(customer_dsn: str, central_dsn: str) -> dict[str, Any]:
    with psycopg.connect(customer_dsn, connect_timeout=3) as conn:
        local_row = conn.execute(
            """SELECT count(*), max(received_at),
                      count(*) FILTER (WHERE received_at - time > interval '5 seconds')
               FROM monitoring.power_measurements"""
        ).fetchone()
        shipped = conn.execute(
            "SELECT shipped_rows, newest_shipped_received_at, last_error FROM app.fleet_push_state WHERE resource = 'measurements'"
        ).fetchone()
    with psycopg.connect(central_dsn, connect_timeout=3) as conn:
        central_row = conn.execute("SELECT count(*) FROM fleet.power_measurements").fetchone()
        last = conn.execute(
            """SELECT batch_type, accepted, duplicates, rejected, status, received_at
               FROM fleet.ingest_events ORDER BY id DESC LIMIT 1"""
        ).fetchone()
    assert local_row is not None and central_row is not None
    lag = None
    if shipped and shipped[1] and local_row[1]:
        lag = max(0.0, (local_row[1] - shipped[1]).total_seconds())
    return {
        "local_rows": local_row[0],
        "replayed": local_row[2],
        "central_rows": central_row[0],
        "behind": local_row[0] - central_row[0],
        "lag_s": lag,
        "last_batch": last,
        "last_error": shipped[2] if shipped else None,
    }


def _format(status: dict[str, Any]) -> str:
    last = status["last_batch"]
    last_text = "none yet"
    if last:
        age = time.time() - last[5].timestamp()
        last_text = f"{last[0]} {last[4]} +{last[1]} dup {last[2]} rej {last[3]}, {age:.0f}s ago"
    lag = "n/a" if status["lag_s"] is None else f"{status['lag_s']:.0f}s"
    line = (
        f"local {status['local_rows']:>7} (replayed {status['replayed']:>4}) | "
        f"central {status['central_rows']:>7} | "
        f"to ship {status['behind']:>5} | lag {lag:>5} | last batch: {last_text}"
    )
    if status["last_error"]:
        line += f" | pusher error: {status['last_error']}"
    return line


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
        state.root / "central-pg", state.central_port, timescaledb_installed()
    ) as cluster:
        yield cluster.create_database("fleet")


def run(
    state_dir: Path,
    duration_s: float,
    interval_s: float,
    sim_interval_s: float,
    push_interval_s: float,
    central: str = "local",
) -> int:
    state = StackState.load(state_dir.resolve())
    logs = state.root / "logs"
    logs.mkdir(exist_ok=True)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "FLEET_"))}
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    _say(f"state in {state.root} (make clean removes it)")
    with (
        _cluster(state.root / "customer-pg", state.customer_port) as customer_pg,
        _central(state, central) as central_dsn,
    ):
        customer_dsn = customer_pg.create_database("meters")
        _say(f"customer stack  {customer_dsn}")
        _say(f"central stack   {central_dsn}")
        ingest_env = {
            **base_env,
            "INGESTD_DATABASE_URL": central_dsn,
            "INGESTD_HOST": "127.0.0.1",
            "INGESTD_PORT": str(state.ingest_port),
            "INGESTD_LOG_FORMAT": "json",
        }
        _run([sys.executable, "-m", "ingestd", "migrate"], ingest_env)
        if not state.token_file.exists():
            token = _run(
                [
                    sys.executable,
                    "-m",
                    "ingestd",
                    "customers",
                    "add",
                    CUSTOMER_CODE,
                    "--name",
                    "Development",
                ],
                ingest_env,
            ).strip()
            state.token_file.write_text(token + "\n")
            state.token_file.chmod(0o600)
            _say(f"registered customer {CUSTOMER_CODE}; token saved to {state.token_file}")
        push_env = {
            **base_env,
            "FLEET_DATABASE_URL": customer_dsn,
            "FLEET_PUSH_ENABLED": "true",
            "FLEET_INGEST_URL": f"http://127.0.0.1:{state.ingest_port}",
            "FLEET_TOKEN_FILE": str(state.token_file),
            "FLEET_PUSH_INTERVAL_S": str(push_interval_s),
            "FLEET_BACKOFF_BASE_S": "2",
            "FLEET_BACKOFF_CAP_S": "30",
            "FLEET_LOG_FORMAT": "json",
        }
        _run([sys.executable, "-m", "pusher", "migrate"], push_env)
        sim_cmd = [sys.executable, "-m", "fleetdev.simulator", "--database-url", customer_dsn,
                   "--interval", str(sim_interval_s), "--offline-every", "40", "--offline-for", "10"]  # fmt: skip
        with (
            _process("ingestd", [sys.executable, "-m", "ingestd", "serve"], ingest_env, logs),
            _process("simulator", sim_cmd, base_env, logs),
        ):
            _wait_http(f"http://127.0.0.1:{state.ingest_port}/readyz", 30)
            _say(f"ingestd on http://127.0.0.1:{state.ingest_port} (logs in {logs})")
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
                        _say(_format(_status(customer_dsn, central_dsn)))
                    except psycopg.Error as exc:
                        _say(f"status unavailable: {exc}")
                final = _status(customer_dsn, central_dsn)
    _say(
        f"stopped; {final['central_rows']} rows arrived centrally of {final['local_rows']} stored locally"
    )
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
    return run(
        args.state_dir,
        args.duration,
        args.interval,
        args.sim_interval,
        args.push_interval,
        args.central,
    )


if __name__ == "__main__":
    sys.exit(main())
