"""Keeping the fleet generator off the CPUs it measures (`bench/fleet.py --pin GEN:SERVICE`).

On a small machine the generator (thousands of simulated gateways in one event loop) competes
with ingestd and PostgreSQL for the same cores, and its share is taken from what is measured
without showing in ingestd's figures. Pinned, the generator runs on its CPUs only and ingestd and
PostgreSQL on theirs: every thread of their processes now, and what they start later (threads
and forked backends inherit their parent's affinity).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["parse_pin", "pin_tree"]


def parse_pin(text: str) -> tuple[set[int], set[int]]:
    """`--pin GEN:SERVICE`: two CPU lists (`0`, `0,2`, `0-3`), disjoint."""

    def cpus(part: str) -> set[int]:
        out: set[int] = set()
        for item in part.split(","):
            low, _, high = item.partition("-")
            try:
                out.update(range(int(low), int(high or low) + 1))
            except ValueError:
                raise ValueError(f"--pin {text}: CPU lists like 0, 0,2 or 0-3") from None
        return out

    generator, _, service = text.partition(":")
    gen, svc = cpus(generator), cpus(service)
    if not gen or not svc or gen & svc:
        raise ValueError(f"--pin {text}: two disjoint CPU lists, GEN:SERVICE")
    if not (gen | svc) <= os.sched_getaffinity(0):
        raise ValueError(f"--pin {text}: this process may run on CPUs {os.sched_getaffinity(0)}")
    return gen, svc


def pin_tree(pids: Sequence[int], cpus: set[int]) -> int:
    """Every thread of `pids` onto `cpus` (threads and children made later inherit it); how
    many threads were pinned."""
    pinned = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), cpus)
                    pinned += 1
    return pinned
