"""Installed versions without `importlib.metadata`, which a gateway's pusher cannot afford.

`importlib.metadata` imports 25 more modules (email, zipfile, csv, pathlib's helpers…): ~1.2 MiB
of a pusher's RSS on a gateway (docs/CAPACITY.md, "The pusher's own footprint"). The pusher asks
it only for version strings: its own (the metrics' build info, the health report, the
User-Agent) and, through psycopg's `version` modules (`metadata.version("psycopg")`, and
psycopg-binary's the same way), psycopg's — read at import and shown only in error messages.

A version is read instead from the name of the distribution's `.dist-info` folder on `sys.path`
(`{name}-{version}.dist-info`, the wheel spec's installed form; uv's and pip's editable installs
have one too), the first that matches, as `importlib.metadata` would find it.
`prefill_psycopg_versions` puts psycopg's two version modules in `sys.modules` with the versions
so read, before psycopg is first imported; where a folder is not found (an egg, a zip) it does
nothing and psycopg reads its metadata itself. tests/pusher/test_versions.py holds the versions
equal to importlib.metadata's.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import types

__all__ = ["dist_version", "prefill_psycopg_versions", "pusher_version"]

# psycopg's modules that read their distribution's version at import.
_PSYCOPG_VERSION_MODULES = {
    "psycopg.version": "psycopg",
    "psycopg_binary.version": "psycopg-binary",
}


@functools.cache
def dist_version(name: str) -> str | None:
    """The version of distribution `name` as installed on `sys.path`; None where no `.dist-info`
    folder of it is found."""
    prefix = re.sub(r"[-_.]+", "_", name).lower() + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip, a folder gone
            continue
        for found in names:
            if found.endswith(".dist-info") and found.lower().startswith(prefix):
                return found[len(prefix) : -len(".dist-info")]
    return None


def pusher_version() -> str:
    """This pusher's release (importlib.metadata's answer where no `.dist-info` is found)."""
    found = dist_version("fleet-pusher")
    if found is None:
        from importlib.metadata import version

        return version("fleet-pusher")
    return found


def prefill_psycopg_versions() -> None:
    """Give psycopg its version modules before it is imported, so that importing it does not
    import importlib.metadata; nothing where psycopg is already imported or a version is not
    found."""
    for module, dist in _PSYCOPG_VERSION_MODULES.items():
        found = dist_version(dist)
        if module in sys.modules or found is None:
            continue
        prefilled = types.ModuleType(module, f"{dist}'s version (pusher.versions)")
        prefilled.__version__ = found  # type: ignore[attr-defined]
        sys.modules[module] = prefilled
