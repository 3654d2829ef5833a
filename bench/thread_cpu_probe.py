"""Thread CPU of chosen functions inside a running ingestd (loaded by bench/request_probe.py).

Not imported by ingestd: request_probe.py starts `ingestd serve` with a `sitecustomize` that
calls `install()` when FLEET_PROBE names functions ("module:qualname", comma-separated, e.g.
`ingestd.ingest:ingest_batch,psycopg_pool.pool_async:AsyncConnectionPool.getconn`). Each is
replaced, as its module finishes importing (or at once when it already has), by a wrapper
that adds the calling thread's CPU time (`time.thread_time_ns`) spent in it to its entry:

- a plain function: from call to return;
- an `async def`: only while its coroutine runs (each step between two suspensions), so the
  time other tasks run while it waits is not counted, and what it awaits is (inclusive).

SIGUSR1 writes `{name: [calls, nanoseconds]}` to FLEET_PROBE_OUT (atomically). The figures are
the parts' own cost in the server, cold caches and all — what a loop of the same calls in one
process (bench/request_parts.py) measures warm. Each wrapped call adds ~1-2 µs (two clock
reads), counted in its own entry and its callers'.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Generator
from types import FrameType, ModuleType
from typing import Any

__all__ = ["install"]

_clock = time.thread_time_ns
_totals: dict[str, list[int]] = {}


class _Timed:
    """A coroutine whose steps are timed into one entry."""

    __slots__ = ("_coro", "_entry")

    def __init__(self, coro: Any, entry: list[int]) -> None:
        self._coro = coro
        self._entry = entry

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, entry = self._coro, self._entry
        entry[0] += 1
        send: Any = None
        error: BaseException | None = None
        while True:
            started = _clock()
            try:
                step = coro.throw(error) if error is not None else coro.send(send)
            except StopIteration as done:
                entry[1] += _clock() - started
                return done.value
            except BaseException:
                entry[1] += _clock() - started
                raise
            entry[1] += _clock() - started
            send, error = None, None
            try:
                send = yield step
            except BaseException as exc:  # handed to the coroutine, as `await` does
                error = exc


def _timed(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    entry = _totals.setdefault(name, [0, 0])
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            return await _Timed(fn(*args, **kwargs), entry)

        return timed_async

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        entry[0] += 1
        started = _clock()
        try:
            return fn(*args, **kwargs)
        finally:
            entry[1] += _clock() - started

    return timed


def _patch(module: ModuleType, qualname: str) -> None:
    owner: Any = module
    *path, last = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    raw = inspect.getattr_static(owner, last)
    name = f"{module.__name__}:{qualname}"
    if isinstance(raw, staticmethod):
        setattr(owner, last, staticmethod(_timed(raw.__func__, name)))
    elif isinstance(raw, classmethod):
        setattr(owner, last, classmethod(_timed(raw.__func__, name)))
    else:
        setattr(owner, last, _timed(raw, name))


class _Finder(importlib.abc.MetaPathFinder):
    """Patches a target module's functions once it has executed, before anyone imports them."""

    def __init__(self, targets: dict[str, list[str]]) -> None:
        self._targets = targets

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self._targets:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader, qualnames = spec.loader, self._targets.pop(fullname)
        exec_module = loader.exec_module  # type: ignore[attr-defined]

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            for qualname in qualnames:
                _patch(module, qualname)

        loader.exec_module = exec_and_patch  # type: ignore[attr-defined]
        return spec


def _dump(_signum: int, _frame: FrameType | None) -> None:
    out = os.environ["FLEET_PROBE_OUT"]
    with open(out + ".tmp", "w") as f:
        json.dump(_totals, f)
    os.replace(out + ".tmp", out)


def install() -> None:
    """Wrap the functions FLEET_PROBE names; SIGUSR1 writes the totals to FLEET_PROBE_OUT."""
    targets: dict[str, list[str]] = {}
    for item in filter(None, os.environ.get("FLEET_PROBE", "").split(",")):
        module, _, qualname = item.strip().partition(":")
        targets.setdefault(module, []).append(qualname)
    for module in [m for m in targets if m in sys.modules]:
        for qualname in targets.pop(module):
            _patch(sys.modules[module], qualname)
    sys.meta_path.insert(0, _Finder(targets))
    signal.signal(signal.SIGUSR1, _dump)
