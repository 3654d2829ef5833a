"""Prints the chaos figures (tests/chaos/figures.py) at the end of a run that produced any."""

from __future__ import annotations

from typing import Any

from tests.chaos.figures import FIGURES
from tests.long_runs import long_runs_selected


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES.touched:
        return
    mode = "long runs included (-m long)" if long_runs_selected() else "fast subset"
    terminalreporter.section(f"chaos figures — {mode}")
    for line in FIGURES.lines():
        terminalreporter.write_line(line)
