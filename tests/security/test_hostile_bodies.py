"""One gateway cannot stall or sink ingestd (issue 19): hostile bodies sent by a customer with a
valid token to the real server process, while a prober asserts that /healthz keeps answering
promptly and the process's RSS stays within the memory budget; a good batch is stored after.

`make test` sends each body at a small size; `make chaos` (`-m long`) at the wire limit
(16 MiB as sent, 64 MiB decompressed), on both storage paths. The figures (answer time of each
body, the slowest /healthz, the RSS growth) go to the chaos summary.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from fleetcore import MAX_BATCH_ROWS, MAX_REJECTED_ROWS, zstd_compress
from fleetcore.protocol import INGEST_PATH
from fleetdev.pgcluster import free_port
from ingestd.customers import add_customer

from tests.chaos.figures import FIGURES
from tests.samples import encode, site

WIRE_LIMIT = 16 * 1024 * 1024
BODY_LIMIT = 64 * 1024 * 1024
HEALTHZ_MAX_S = float(os.environ.get("FLEET_HEALTHZ_MAX_MS", "500")) / 1000
RSS_GROWTH_MAX = 300 * 1024 * 1024
ANSWER_MAX_S = 30.0


@dataclass
class Prober:
    """GET /healthz every 50 ms on its own connection each time; the slowest answer seen."""

    url: str
    slowest: float = 0.0
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5) as resp:  # noqa: S310
                    resp.read()
            except (urllib.error.URLError, OSError):
                self.failures += 1
            self.slowest = max(self.slowest, time.perf_counter() - started)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    token: str

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int | None, float]:
        request = urllib.request.Request(  # noqa: S310 - loopback URL of the test's own server
            self.url + INGEST_PATH,
            data=body,
            method="POST",
            headers={"X-Customer-Token": self.token, "Content-Type": "application/json", **headers},
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=120) as resp:  # noqa: S310
                resp.read()
                status: int | None = resp.status
        except urllib.error.HTTPError as exc:
            exc.read()
            status = exc.code
        except (urllib.error.URLError, OSError):
            status = None  # the connection was closed: allowed
        return status, time.perf_counter() - started


@pytest.fixture
def server(central_db: str) -> Iterator[Server]:
    """`ingestd serve` as its own process, with its default limits and memory budget."""
    token = add_customer(central_db, "HOSTILE1")
    port = free_port()
    env = {**os.environ, "INGESTD_DATABASE_URL": central_db, "INGESTD_PORT": str(port),
           "INGESTD_LOG_LEVEL": "warning", "INGESTD_RATE_LIMIT_PER_S": "1000",
           "INGESTD_RATE_LIMIT_BURST": "1000"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # bounded: until /healthz answers or 60 s
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):  # noqa: S310
                    break
            except (urllib.error.URLError, OSError):
                assert proc.poll() is None, "ingestd exited at start"
                assert time.monotonic() < deadline, "ingestd did not start within 60 s"
                time.sleep(0.2)
        yield Server(proc, url, token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


GZIP = {"Content-Encoding": "gzip", "X-Batch-Type": "measurements"}
ZSTD = {"Content-Encoding": "zstd", "X-Batch-Type": "measurements"}


def _empty_gzip_members(wire: int) -> bytes:
    return gzip.compress(b"", mtime=0) * (wire // 20)


def _empty_zstd_frames(wire: int) -> bytes:
    frame = zstd_compress(b"")
    return frame * (wire // len(frame))


def _tiny_items(decoded: int) -> bytes:
    return gzip.compress(b'{"items":[' + b",".join([b"{}"] * (decoded // 3)) + b"]}", 9)


def _bomb(decoded: int) -> bytes:
    return gzip.compress(b'{"items":[' + b" " * decoded + b"]}", 9)


def _bad_rows(rows: int) -> bytes:
    return gzip.compress(b'{"items":[' + b",".join([b'{"device_id":1}'] * rows) + b"]}")


def _valid_rows(rows: int) -> bytes:
    row = b'{"device_id":1,"time":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}'
    return gzip.compress(b'{"items":[' + b",".join([row] * rows) + b"]}")


# name, body builder at (small size, wire-limit size), headers, the 4xx it must get
ATTACKS: list[tuple[str, Callable[[bool], bytes], dict[str, str], set[int]]] = [
    ("empty gzip members", lambda full: _empty_gzip_members(WIRE_LIMIT if full else 400_000), GZIP, {400}),
    ("empty zstd frames", lambda full: _empty_zstd_frames(WIRE_LIMIT if full else 400_000), ZSTD, {400}),
    ("{} items past the row cap", lambda full: _tiny_items(BODY_LIMIT if full else 1_000_000), GZIP, {413}),
    ("gzip bomb", lambda full: _bomb(BODY_LIMIT * 2 if full else BODY_LIMIT + 1024), GZIP, {413}),
    ("rows refused past the limit", lambda full: _bad_rows(MAX_BATCH_ROWS if full else 5 * MAX_REJECTED_ROWS), GZIP, {413}),
    ("valid rows past the row cap", lambda full: _valid_rows(MAX_BATCH_ROWS + 1), GZIP, {413}),
]  # fmt: skip


def _run_attacks(server: Server, full: bool) -> None:
    prober = Prober(server.url)
    rss_before = server.rss()
    rss_peak = rss_before
    prober.start()
    slowest = 0.0
    try:
        for name, build, headers, expected in ATTACKS:
            body = build(full)
            prober.slowest = 0.0
            status, took = server.post(body, headers)
            time.sleep(0.2)  # a probe sent during the answer has come back
            slowest = max(slowest, prober.slowest)
            rss_peak = max(rss_peak, server.rss())
            FIGURES.bad_inputs += 1
            FIGURES.notes.append(
                f"hostile body '{name}' ({len(body):,} B): {status} in {took:.2f} s, "
                f"slowest /healthz meanwhile {prober.slowest * 1000:.0f} ms"
            )
            assert server.proc.poll() is None, f"ingestd died on '{name}'"
            assert status is None or status in expected, (name, status)
            assert took < ANSWER_MAX_S, (name, took)
    finally:
        prober.stop()
    FIGURES.notes.append(
        f"hostile bodies ({'wire limit' if full else 'small'}): slowest /healthz "
        f"{slowest * 1000:.0f} ms, RSS {rss_before / 2**20:.0f} -> peak "
        f"{rss_peak / 2**20:.0f} MiB"
    )
    print("\n".join(FIGURES.notes[-len(ATTACKS) - 1 :]))  # shown with -s, and by make chaos
    assert slowest < HEALTHZ_MAX_S, f"/healthz took {slowest:.3f} s"
    assert prober.failures == 0
    assert rss_peak - rss_before < RSS_GROWTH_MAX
    status, _ = server.post(
        encode([site(1)]), {"Content-Encoding": "gzip", "X-Batch-Type": "sites"}
    )
    assert status == 200, "a good batch is stored after the attacks"


def test_hostile_bodies_neither_stall_nor_sink_ingestd(server: Server) -> None:
    """Each hostile body (many empty gzip members / zstd frames, `{}` items past the row cap, a
    gzip bomb, more refused rows than allowed, more valid rows than allowed) is answered with
    its 4xx within seconds while /healthz keeps answering promptly and RSS stays within budget;
    a good batch is stored afterwards."""
    _run_attacks(server, full=False)


@pytest.mark.long
def test_hostile_bodies_at_the_wire_limit(server: Server) -> None:
    """The same at the wire limit (16 MiB as sent, 64 MiB decompressed)."""
    _run_attacks(server, full=True)
