"""Shared pieces of the benchmarks: a central database, a running ingestd, and meters.

Every bench script owns what it starts: a throwaway PostgreSQL cluster (`fleetdev.pgcluster`),
an ingestd subprocess on a loopback port, and removes both on exit, Ctrl-C and SIGTERM
included (`exit_on_sigterm` turns SIGTERM into `SystemExit` so `with` blocks unwind).

Rows are generated once, before any clock starts (`rows.py`).

CPU is read from the kernel's accounting (`/proc/<pid>/stat`), not from wall time, so a cost per
row stays comparable on a noisy shared machine.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Self

import psycopg
from fleetdev.pgcluster import PgCluster, free_port

__all__ = [
    "BENCH_DIR",
    "RESULTS_DIR",
    "IngestdProcess",
    "Summary",
    "cpu_seconds",
    "create_central_database",
    "customer_id",
    "exit_on_sigterm",
    "machine_info",
    "peak_rss_bytes",
    "postgres_cpu_seconds",
    "rss_bytes",
    "summarize",
    "write_results",
]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so subprocesses and clusters are stopped."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# --- database ---------------------------------------------------------------------------------


def create_central_database(
    cluster: PgCluster,
    name: str = "fleet_central",
    *,
    bootstrap: bool = True,
    timescale: bool = False,
) -> str:
    """A database as `ingestd migrate` leaves it (migrations, then the storage bootstrap); returns
    its DSN. With `bootstrap=False` only the migrations: a plain table with no partitions and no
    hourly aggregate to maintain (the baseline of bench/rollup_cost.py).

    Plain PostgreSQL (weekly partitions) unless `timescale` (the cluster must preload it:
    `temporary_cluster(timescaledb=True)`), so results stay comparable between machines."""
    import asyncio

    from ingestd.migrate import apply_migrations
    from ingestd.storage import StoragePlan, bootstrap_database

    dsn = cluster.create_database(name)
    apply_migrations(dsn)
    if bootstrap:
        plan = StoragePlan(timescaledb="on" if timescale else "off")
        asyncio.run(bootstrap_database(dsn, plan))
    return dsn


def synthetic_customers_sql(code_prefix: str, name: str) -> str:
    """INSERT `%s` customers coded `<code_prefix>000001`… and named `<name> 1`…, RETURNING id."""
    return f"""
INSERT INTO fleet.customers (code, name)
SELECT '{code_prefix}' || lpad(g::text, 6, '0'), '{name} ' || g FROM generate_series(1, %s) AS g
RETURNING id
"""


def synthetic_fill_sql(start: str, minutes: str, register_step: str, source: str = "") -> str:
    """INSERT one-a-minute samples straight into the stored layout, `minutes` of them from
    `start` (SQL expressions) for `%(devices)s` devices spread over the customers `%(ids)s`:
    every value column set, the energy registers rising by `register_step` (an SQL expression of
    the device's number `d.n`) a minute, the rest a plausible wobble. `source` adds FROM items
    `start` may name. Faster than the ingest path by far, for benches of the upkeep."""
    from ingestd.storage.copybuffer import COPY_COLUMNS  # numpy: only the benches that fill

    values = [
        f"(1000000 + d.n * 100 + s.k * {register_step})"
        if c.startswith("energy_") and c.endswith("_scaled")
        else "(2300 + (d.n + s.k) %% 17)"
        if c.endswith("_scaled")
        else "NULL"
        for c in COPY_COLUMNS[3:-1]
    ]
    return f"""
INSERT INTO fleet.power_measurements_scaled ({", ".join(COPY_COLUMNS)})
SELECT {start} + s.k * INTERVAL '1 minute', d.device_id, {start} + s.k * INTERVAL '1 minute',
       {", ".join(values)}, d.customer_id
FROM {source}
     (SELECT n, (%(ids)s::bigint[])[1 + n %% cardinality(%(ids)s::bigint[])],
             1 + n / cardinality(%(ids)s::bigint[])
      FROM generate_series(0, %(devices)s - 1) AS n) AS d(n, customer_id, device_id),
     generate_series(0, {minutes} - 1) AS s(k)
"""


def customer_id(dsn: str, code: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT id FROM fleet.customers WHERE code = %s", (code,)).fetchone()
    if row is None:
        raise LookupError(f"no customer {code!r}")
    return int(row[0])


# --- ingestd ----------------------------------------------------------------------------------


def terminate(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    """SIGTERM a child, SIGKILL it if it outlives `timeout_s`; reap it either way."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class ChildService:
    """A child process used as a context manager: `start()` on entry (and `stop()` if the start
    fails half-way), `stop()` on exit. Subclasses define both."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


KEEP_LOG_ENV = "FLEET_BENCH_KEEP_LOG"
"""Set (to anything) in a bench's environment: ingestd's log file is kept, not deleted, at the end."""


@dataclass
class IngestdProcess(ChildService):
    """`python -m ingestd serve` as a child process on a free loopback port."""

    database_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    ready_path: str = "/readyz"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("ingestd is not running")
        return self.process.pid

    def start(self, ready_timeout_s: float = 30.0) -> None:
        env = {
            **os.environ,
            "INGESTD_DATABASE_URL": self.database_url,
            "INGESTD_HOST": "127.0.0.1",
            "INGESTD_PORT": str(self.port),
            "INGESTD_RATE_LIMIT_PER_S": "100000",
            "INGESTD_RATE_LIMIT_BURST": "100000",
            "INGESTD_LOG_FORMAT": "json",
            "INGESTD_TIMESCALEDB": "off",
            **self.extra_env,
        }
        fd, name = tempfile.mkstemp(prefix="fleet-bench-ingestd-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ingestd", "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"ingestd exited at start:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", self.ready_path)
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            time.sleep(0.1)
        raise RuntimeError(f"ingestd not ready within {timeout_s:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 15.0) -> None:
        proc, self.process = self.process, None
        terminate(proc, timeout_s)
        if self.log_path is not None:
            if os.environ.get(KEEP_LOG_ENV):
                print(f"  ingestd's log kept: {self.log_path}", file=sys.stderr)
            else:
                self.log_path.unlink(missing_ok=True)
            self.log_path = None


# --- meters -----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of a process (plus its reaped children's when `children`)."""
    f = _stat_fields(pid)
    ticks = int(f[11]) + int(f[12])  # utime, stime
    if children:
        ticks += int(f[13]) + int(f[14])  # cutime, cstime
    return ticks / _CLK_TCK


def postgres_cpu_seconds(cluster: PgCluster) -> float:
    """CPU of the whole cluster: postmaster, its live children, and those already reaped."""
    postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            f = _stat_fields(int(entry.name))
            if int(f[1]) == postmaster:
                total += (int(f[11]) + int(f[12])) / _CLK_TCK
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size now (`/proc/<pid>/statm`)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def peak_rss_bytes(pid: int) -> int:
    """High-water mark of the resident set (VmHWM), as the kernel counts it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise LookupError("VmHWM not in /proc status")


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    median: float
    low: float
    high: float
    samples: tuple[float, ...]

    @property
    def spread_pct(self) -> float:
        """(max - min) / median, in percent."""
        return 100.0 * (self.high - self.low) / self.median if self.median else 0.0


def summarize(samples: Sequence[float]) -> Summary:
    if not samples:
        raise ValueError("no samples")
    return Summary(statistics.median(samples), min(samples), max(samples), tuple(samples))


def _command_output(*args: str) -> str:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(dsn: str | None = None) -> dict[str, Any]:
    """What a result depends on: cores, memory, CPU model, versions, commit."""
    from importlib.metadata import PackageNotFoundError, version

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    for package in ("psycopg", "aiohttp", "msgspec"):
        with contextlib.suppress(PackageNotFoundError):
            info[package] = version(package)
    if shutil.which("git"):
        info["git_commit"] = _command_output("git", "-C", str(BENCH_DIR), "rev-parse", "HEAD")
    if dsn is not None:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = row[0] if row else None
    return info


def write_results(name: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    """Write `path`, by default `bench/results/<name>-<UTC timestamp>.json` (git-ignored)."""
    if path is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
