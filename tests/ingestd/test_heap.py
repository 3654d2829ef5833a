"""`ingestd serve` tells glibc to keep what a large batch frees (`ingestd.heap`): a batch's buffers
of ~1 MiB each come back from the heap without faulting their pages in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

_BATCHES = """
import resource, sys
from ingestd.heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() is True
def batch():  # a large batch's buffers: a dozen of 1 MiB, each touched, then all freed
    held = [bytearray(1 << 20) for _ in range(12)]
    for buffer in held:
        buffer[::4096] = b"x" * len(range(0, 1 << 20, 4096))
for _ in range(3):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    batch()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""


def _faults_per_batch(way: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _BATCHES, way], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_a_batchs_freed_buffers_are_reused_without_page_faults() -> None:
    """At glibc's defaults the 12 MiB a batch frees go back to the system (its trim threshold
    follows the largest block freed, 2 MiB here) and the next batch faults ~3,000 pages in;
    kept, it faults none of them."""
    assert _faults_per_batch("defaults") > 1_000
    assert _faults_per_batch("keep") < 100
