"""The figures `make chaos` reports, summed over the session, and the switch for the full run.

Tests of tests/chaos and tests/security add to `FIGURES`; `tests/chaos/conftest.py` prints them
at the end of the run. Long scenarios are marked `@full_only`: they run under `make chaos`
(FLEET_CHAOS=full) and are skipped in the normal `make test`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import pytest

__all__ = ["FIGURES", "FULL", "Figures", "full_only"]

FULL = os.environ.get("FLEET_CHAOS", "").strip().lower() == "full"
_NOT_FULL = pytest.mark.skipif(
    not FULL, reason="long chaos test: runs with FLEET_CHAOS=full (make chaos)"
)
F = TypeVar("F", bound=Callable[..., Any])


def full_only(test: F) -> F:
    """Mark a long test `slow` and run it only under `make chaos` (FLEET_CHAOS=full)."""
    return pytest.mark.slow(_NOT_FULL(test))  # type: ignore[no-any-return]


@dataclass
class Figures:
    scenarios: int = 0
    faults_injected: int = 0
    rows_committed: int = 0
    rows_arrived: int = 0
    rows_dead_lettered: int = 0
    rows_quarantined: int = 0
    rows_lost: int = 0
    rows_duplicated: int = 0
    duplicate_deliveries: int = 0
    dead_letter_redeliveries: int = 0
    bad_inputs: int = 0
    bad_input_5xx: int = 0
    scenario_5xx: int = 0
    faults_by_kind: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def fault(self, kind: str, n: int = 1) -> None:
        self.faults_injected += n
        self.faults_by_kind[kind] = self.faults_by_kind.get(kind, 0) + n

    def lines(self) -> list[str]:
        out = []
        for f in fields(self):
            if f.name in ("faults_by_kind", "notes"):
                continue
            out.append(f"{f.name.replace('_', ' '):<26} {getattr(self, f.name)}")
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.faults_by_kind.items()))
        out.append(f"{'faults by kind':<26} {kinds or '-'}")
        out.extend(f"note: {note}" for note in self.notes[:20])
        return out

    @property
    def touched(self) -> bool:
        return bool(self.scenarios or self.bad_inputs or self.faults_injected)


FIGURES = Figures()
