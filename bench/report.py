"""One way for a bench script to report its figures against its targets.

A script declares its targets (`Target`: a bound and which side of it is good) and turns its
results into `Figure`s: what was measured, the spread or baseline beside it, the target and
the verdict (MET / NOT MET; "-" for a figure reported without a target). `finish` prints them
as one table, stores them in the results under "figures" and writes the JSON; run_all.py
collects the "figures" of every script and prints them with the same `print_figures`, knowing
nothing else of a script's results.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from common import write_results

__all__ = ["Figure", "Target", "errors", "finish", "print_figures", "verdict"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
    ">": operator.gt,
}


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("MET" if met else "NOT MET")


@dataclass(frozen=True)
class Target:
    """`value op bound` is met, e.g. Target("<", 250, " ms") for a p99 under 250 ms."""

    op: Literal["<", "<=", ">=", ">"]
    bound: float
    unit: str = ""
    also: str = ""  # a condition beside the bound, checked by the script ("0 errors")
    of: str = ""  # which of the measured values the bound is for ("p99")

    def __str__(self) -> str:
        text = f"{self.of} {self.op} {self.bound:g}{self.unit}".lstrip()
        return f"{text}, {self.also}" if self.also else text

    def met(self, value: float | None) -> bool:
        return value is not None and value == value and _OPS[self.op](value, self.bound)


@dataclass(frozen=True)
class Figure:
    """One row of a summary; `verdict` from `met` unless given (SKIPPED: why)."""

    figure: str
    measured: str
    spread: str = ""
    target: str = ""
    verdict: str = "-"

    @classmethod
    def of(
        cls,
        figure: str,
        measured: str,
        spread: str = "",
        target: Target | str = "",
        met: bool | None = None,
    ) -> Figure:
        return cls(figure, measured, spread, str(target), verdict(met))

    @classmethod
    def checked(
        cls,
        figure: str,
        value: float | None,
        measured: str,
        target: Target,
        spread: str = "",
        also: bool = True,
    ) -> Figure:
        """A figure against its target: met when `value` meets it and `also` holds."""
        return cls.of(figure, measured, spread, target, target.met(value) and also)


def errors(statuses: Mapping[str, int]) -> str:
    """The answers other than 200, by status ("none")."""
    bad = {k: v for k, v in statuses.items() if k != "200"}
    return ", ".join(f"{k}: {v}" for k, v in bad.items()) or "none"


def print_figures(figures: Sequence[Figure | Mapping[str, Any]], title: str) -> None:
    rows = [asdict(f) if isinstance(f, Figure) else dict(f) for f in figures]
    if not rows:
        return
    print(f"\n{title}")
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]}
    line = "  ".join(f"{k:<{widths[k]}}" for k in widths)
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(f"{r[k]!s:<{widths[k]}}" for k in widths).rstrip())


def finish(
    benchmark: str, result: dict[str, Any], figures: Sequence[Figure], json_path: Path | None
) -> Path:
    """Print the figures against their targets, keep them in `result`, write the results."""
    print_figures(figures, f"{benchmark}: figures against targets")
    result["figures"] = [asdict(f) for f in figures]
    path = write_results(benchmark, result, json_path)
    print(f"results: {path}")
    return path
