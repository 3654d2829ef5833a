"""The figures `make chaos` reports, summed over the session.

Tests of tests/chaos and tests/security add to `FIGURES`; `tests/chaos/conftest.py` prints them
at the end of the run. Long scenarios are marked `@pytest.mark.long` (tests/long_runs.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["FIGURES", "Figures"]


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
