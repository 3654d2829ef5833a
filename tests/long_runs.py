"""Long runs are selected with the pytest marker `long`, not switched by the environment.

The chaos scenarios, the soak, the failover and full-disk runs are `@pytest.mark.long`. They run
when the `-m` expression names `long` (not negated): `make chaos` passes `-m "long or not long"`
(everything), `make soak` `-m long`. Otherwise — a plain `pytest`, `make test` — they are
reported skipped with how to run them. With long runs selected, the property-based tests of
tests/chaos and tests/security draw more examples (`long_runs_selected()`).
"""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

__all__ = ["long_runs_selected"]

_SELECTED = False


def long_runs_selected() -> bool:
    """Whether this session's `-m` expression selects the tests marked `long`."""
    return _SELECTED


def pytest_configure(config: pytest.Config) -> None:
    global _SELECTED
    tokens = re.findall(r"[()]|[\w.-]+", config.getoption("markexpr") or "")
    _SELECTED = any(word == "long" and before != "not" for before, word in pairwise(["", *tokens]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _SELECTED:
        return
    skip = pytest.mark.skip(reason="long run: selected with -m long (make chaos, make soak)")
    for item in items:
        if item.get_closest_marker("long") is not None:
            item.add_marker(skip)
