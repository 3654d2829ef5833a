"""The peer: InfluxDB 1.x (Debian's `influxdb` package), started and removed by the bench.

`InfluxdProcess` runs `influxd` as a child process with its own config file in a temporary
folder: meta, data and WAL folders in that folder, the HTTP API on a free 127.0.0.1 port, the
RPC (backup) service on another loopback port, usage reporting off and every other listener
(admin, graphite, collectd, opentsdb, udp, ifql) disabled, self-monitoring not stored. On exit,
an error, Ctrl-C or SIGTERM (with `common.exit_on_sigterm`) the process is stopped and the
folder deleted.

The rows are the ingest benchmark's own (`common.generate_measurements`): one line per sample,
measurement `power_measurements`, tags `customer` and `device_id`, the 24 values as float
fields, the sample time in seconds (`precision=s`). Bodies are gzip level 1 like Fleet's, built
before any clock starts, and POSTed to `/write` 5,000 lines per request (whatever the batch
size is), one request in flight.

Fairness notes: PostgreSQL runs with fsync off; InfluxDB cannot turn off the WAL's fsync, so
its `wal-fsync-delay` is set to 100 ms (fsyncs are batched, not skipped). InfluxDB does not
store `received_at` (Fleet does): it writes 24 values per row, Fleet 25 plus two keys.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from common import ChildService, terminate
from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetdev.pgcluster import free_port
from rows import MeasurementTuple, chunks

__all__ = [
    "InfluxdProcess",
    "PeerError",
    "influxd_binary",
    "line_protocol_bodies",
    "write_lines",
]

MEASUREMENT = "power_measurements"
DATABASE = "fleet_bench"

_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  wal-fsync-delay = "100ms"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  write-tracing = false
  pprof-enabled = false
  max-body-size = 0

[ifql]
  enabled = false

[logging]
  level = "warn"

[subscriber]
  enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false

[continuous_queries]
  enabled = false
"""


class PeerError(RuntimeError):
    """influxd did not start, or refused a write."""


def influxd_binary() -> str | None:
    """Path of `influxd`, or None when the package is not installed."""
    return shutil.which("influxd")


@dataclass
class InfluxdProcess(ChildService):
    """`influxd -config <temp>/influxdb.conf`, on loopback ports, data in the temp folder."""

    binary: str
    http_port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    root: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise PeerError("influxd is not running")
        return self.process.pid

    def write_url(self, database: str = DATABASE) -> str:
        return f"{self.base_url}/write?db={database}&precision=s"

    def start(self, ready_timeout_s: float = 30.0) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fleet-bench-influx-"))
        config = self.root / "influxdb.conf"
        config.write_text(
            _CONFIG.format(root=self.root, http_port=self.http_port, rpc_port=self.rpc_port)
        )
        log = (self.root / "influxd.log").open("wb")
        with log:
            self.process = subprocess.Popen(
                [self.binary, "-config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PeerError(f"influxd exited at start:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self._request("GET", "/ping")[0] == 204:
                    return
            time.sleep(0.1)
        raise PeerError(f"influxd not ready within {ready_timeout_s:g} s:\n{self.log_tail()}")

    def version(self) -> str:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
            try:
                conn.request("GET", "/ping")
                return conn.getresponse().getheader("X-Influxdb-Version") or "unknown"
            finally:
                conn.close()
        return "unknown"

    def _request(self, method: str, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def query(self, statement: str) -> bytes:
        status, body = self._request("POST", "/query?" + urllib.parse.urlencode({"q": statement}))
        if status != 200 or b'"error"' in body:
            raise PeerError(f"influxd query {statement!r} answered {status}: {body[:300]!r}")
        return body

    def reset_database(self, database: str = DATABASE) -> None:
        """An empty database, as the PostgreSQL side starts from an empty table."""
        self.query(f"DROP DATABASE {database}")
        self.query(f"CREATE DATABASE {database}")

    def count_rows(self, database: str = DATABASE) -> int:
        body = self.query(f'SELECT count("v1") FROM "{database}".."{MEASUREMENT}"')
        text = body.decode()
        marker = '"values":[["'
        start = text.find(marker)
        if start < 0:
            return 0
        return int(text[text.index(",", start) + 1 : text.index("]", start)])

    def log_tail(self, lines: int = 20) -> str:
        if self.root is None:
            return ""
        path = self.root / "influxd.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 15.0) -> None:
        proc, self.process = self.process, None
        terminate(proc, timeout_s)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def _line(customer: str, row: MeasurementTuple) -> str:
    when, device_id = row[0], row[1]
    fields = ",".join(
        f"{name}={float(value)!r}"
        for name, value in zip(MEASUREMENT_VALUE_FIELDS, row[3:], strict=True)
    )
    return (
        f"{MEASUREMENT},customer={customer},device_id={device_id} {fields} {int(when.timestamp())}"
    )


def line_protocol_bodies(
    rows: Sequence[MeasurementTuple], customer: str, lines_per_request: int = 5_000
) -> list[tuple[bytes, int]]:
    """gzip'd (level 1) line-protocol bodies of `rows`, with their line counts."""
    return [
        (gzip.compress("\n".join(_line(customer, r) for r in batch).encode(), 1), len(batch))
        for batch in chunks(rows, lines_per_request)
    ]


async def write_lines(
    session: aiohttp.ClientSession, url: str, bodies: Sequence[tuple[bytes, int]]
) -> None:
    """POST each body in turn, one in flight; every answer must be 204."""
    headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
    for body, _ in bodies:
        async with session.post(url, data=body, headers=headers) as resp:
            answer = await resp.read()
            if resp.status != 204:
                raise PeerError(f"influxd answered {resp.status}: {answer[:300]!r}")
