"""How one unit of work (a pusher tick, an ingest batch) moves between a package's modules.

`CallShape` is a `sys.setprofile` hook for the event-loop thread. It sees every *fresh* start of a
function or coroutine whose code lives under `root` (a coroutine resumed after an await is not a
new call: its frame's last instruction lies past its first RESUME), and for each one finds the
nearest calling frame under `root`. A *visit* is a start in another module than that caller's
(or with no caller under `root`: a task's first step); the figures are

- modules: distinct modules visited;
- visits and re-entries (visits into a module visited before: visits - modules);
- call-backs: visits into a module that is already on the calling stack — a collaborator calling
  back into whoever called it, which one orchestrating function never needs.

`summary(accessors=False)` leaves out reading data: dunder methods (`state[resource]`, a
dataclass's `__init__`) and property getters (`batch.full`), so what remains are the calls that
do work.

Work handed to threads (`asyncio.to_thread`) is not seen; it is the same before and after.
"""

from __future__ import annotations

import dis
import functools
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

__all__ = ["CallShape"]


def _first_resume(code: CodeType) -> int:
    for ins in dis.get_instructions(code):
        if ins.opname == "RESUME":
            return ins.offset
    return 0


@dataclass
class CallShape:
    root: Path
    package: str
    visits: list[tuple[str, str, bool]] = field(default_factory=list)
    callbacks: list[str] = field(default_factory=list)
    _accessors: set[CodeType] = field(default_factory=set)
    _resume: dict[CodeType, int] = field(default_factory=dict)
    _modules: dict[str, str | None] = field(default_factory=dict)

    def _module(self, filename: str) -> str | None:
        if filename not in self._modules:
            path = Path(filename)
            name: str | None = None
            if path.is_relative_to(self.root):
                parts = path.relative_to(self.root.parent).with_suffix("").parts
                name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            self._modules[filename] = name
        return self._modules[filename]

    def _hook(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        module = self._module(code.co_filename)
        if module is None:
            return
        if code not in self._resume:
            self._resume[code] = _first_resume(code)
        if frame.f_lasti > self._resume[code]:
            return  # a coroutine or generator resumed, not called
        stack: list[str] = []
        back = frame.f_back
        while back is not None:
            name = self._module(back.f_code.co_filename)
            if name is not None:
                stack.append(name)
            back = back.f_back
        caller = stack[0] if stack else None
        if caller == module:
            return
        accessor = code.co_name.startswith("__") or code in self._accessors
        self.visits.append((caller or "-", module, accessor))
        if module in stack:
            self.callbacks.append(f"{caller} → {module}.{code.co_qualname}")

    def _property_getters(self) -> set[CodeType]:
        codes: set[CodeType] = set()
        for name, module in list(sys.modules.items()):
            if name != self.package and not name.startswith(self.package + "."):
                continue
            for _, cls in inspect.getmembers(module, inspect.isclass):
                for attr in vars(cls).values():
                    getter = getattr(attr, "fget", None) or getattr(attr, "func", None)
                    code = getattr(inspect.unwrap(getter), "__code__", None) if getter else None
                    if isinstance(attr, property | functools.cached_property) and code:
                        codes.add(code)
        return codes

    def __enter__(self) -> CallShape:
        self._accessors = self._property_getters()
        sys.setprofile(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)

    def _visits(self, accessors: bool) -> list[tuple[str, str, bool]]:
        return [v for v in self.visits if accessors or not v[2]]

    def modules(self, accessors: bool = True) -> set[str]:
        return {callee for _, callee, _ in self._visits(accessors)}

    def edges(self, accessors: bool = True) -> dict[str, int]:
        """Visits per `caller → callee` pair, most first."""
        counts: dict[str, int] = {}
        for caller, callee, _ in self._visits(accessors):
            key = f"{caller} → {callee}"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary(self, accessors: bool = True) -> dict[str, Any]:
        visits = self._visits(accessors)
        modules = len(self.modules(accessors))
        return {
            "modules": modules,
            "visits": len(visits),
            "re_entries": len(visits) - modules,
            "call_backs": len(self.callbacks),
        }
