"""Modules psycopg imports that `pusher run` never uses, loaded only if something uses them.

`psycopg.pq.misc` imports `ctypes.util` at the top for `find_library`, which only psycopg's
pure-Python libpq wrapper calls (to find a system libpq; the pusher runs psycopg-binary, which
brings its own). With it come shutil, tempfile, bz2, lzma, fnmatch: 0.7 MiB of a gateway's
pusher (docs/CAPACITY.md, "The pusher's own footprint"). `defer_unused_imports` puts a stand-in
in `sys.modules` (and on its package) before psycopg is first imported: the first attribute
asked of it imports the real module, which takes its place everywhere from then on. Nothing is
deferred where the module is already imported. tests/pusher/test_versions.py holds `pusher run`
to not loading it, and the stand-in to answering as the module does.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["DEFERRED", "defer_unused_imports"]

DEFERRED = ("ctypes.util",)


class _Deferred(types.ModuleType):
    """Stands in for a module until something asks for one of its attributes."""

    def __getattr__(self, attribute: str) -> Any:
        module = sys.modules.get(self.__name__)
        if module is None or module is self:
            module = _import(self.__name__, self)
        return getattr(module, attribute)


def _import(name: str, stand_in: _Deferred) -> types.ModuleType:
    """The real module `name`, put in the stand-in's place in `sys.modules` and on its package."""
    del sys.modules[name]
    try:
        module = importlib.import_module(name)
    except BaseException:
        sys.modules[name] = stand_in
        raise
    package, _, child = name.rpartition(".")
    setattr(sys.modules[package], child, module)
    return module


def defer_unused_imports() -> None:
    """Stand-ins for the modules in `DEFERRED` that are not imported yet."""
    for name in DEFERRED:
        if name in sys.modules:
            continue
        package, _, child = name.rpartition(".")
        parent = importlib.import_module(package)
        stand_in = _Deferred(name, f"{name}, imported on first use (pusher.deferred)")
        sys.modules[name] = stand_in
        setattr(parent, child, stand_in)
