"""What a running pusher loads and how it keeps its memory flat: `pusher run` imports no
migration tooling, no aiohttp, no prometheus_client, no numpy; glibc's arenas are capped and the worker pool is
small."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys

from pusher.ops.memory import (
    WORKER_THREADS,
    BacklogRelease,
    limit_arenas,
    release_memory,
    use_bounded_executor,
)
from pusher.source.digest import sha256_digest

# Loaded only by the commands or settings that use them (pusher/cli.py's docstring).
NOT_FOR_RUN = ("yoyo", "sqlparse", "numpy", "aiohttp", "prometheus_client", "pusher.migrate", "fleetcore.columnar",
               "fleetcore.columnar_batch", "pusher.source.columns_numpy", "hashlib", "secrets",
               "fleetcore.tokens", "argparse", "shutil", "tempfile")  # fmt: skip


def test_pusher_run_imports_only_what_it_runs() -> None:
    """Importing the command and the daemon, and choosing the standard-library encoder, loads
    none of yoyo, sqlparse, numpy, aiohttp (client or server), prometheus_client, the numpy
    encoder, hashlib (OpenSSL's digests), the token functions, argparse for `pusher run`
    alone, or what ctypes.util brings (shutil, tempfile: psycopg imports it, only to find a system
    libpq)."""
    code = (
        "import json, sys\n"
        "import pusher.cli, pusher.daemon\n"
        "from pusher.source.columns import columnar_encoder\n"
        "columnar_encoder('stdlib')\n"
        "assert pusher.cli._command(['run']) == 'run'\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert [m for m in NOT_FOR_RUN if m in loaded] == []


def test_the_full_sets_digest_is_sha256() -> None:
    """The full set's digest, computed without hashlib, is hashlib's SHA-256 byte for byte."""
    for body in (b"", b'{"items":[]}', bytes(range(256)) * 300):
        assert sha256_digest(body) == hashlib.sha256(body).digest()


def test_malloc_arenas_are_capped_and_the_worker_pool_is_small() -> None:
    """On glibc the arena cap is accepted, and the loop's default executor (asyncio.to_thread)
    has two workers, however many tasks are handed to it at once."""
    assert limit_arenas() is True

    async def threads_used() -> int:
        executor = use_bounded_executor(asyncio.get_running_loop())
        names = await asyncio.gather(
            *(asyncio.to_thread(lambda: __import__("threading").current_thread().name)
              for _ in range(20))
        )  # fmt: skip
        executor.shutdown()
        return len(set(names))

    assert asyncio.run(threads_used()) <= WORKER_THREADS


def test_memory_is_released_when_a_backlog_has_drained_and_once_more_after() -> None:
    """Full batches (a backlog) then one that is not full release memory, and the next read
    once more; batches that are never full (a caught-up pusher's ticks) release nothing until
    a period has passed since the last release, then once per period."""
    now = [0.0]
    release = BacklogRelease(clock=lambda: now[0])
    for full in (False, False, True, True, True, False, False, False, True, False):
        release.batch_read(full)
    assert release.releases == 3
    release.batch_read(False)  # once more after the drained backlog
    assert release.releases == 4
    for _ in range(5):  # a caught-up pusher's ticks within one period: nothing
        now[0] += 10.0
        release.batch_read(False)
    assert release.releases == 4
    for _ in range(12):  # two more periods: once per period
        now[0] += 10.0
        release.batch_read(False)
    assert release.releases == 6
    assert release_memory() is True  # glibc here: malloc_trim is there
