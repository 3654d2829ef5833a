"""Builds ingestd's C extension (`ingestd._rowscan`, src/ingestd/_rowscan.c) into the wheel.

A hatchling build hook: setuptools' `build_ext` compiles the module with the flags this Python
was built with (a C compiler and Python's headers are needed: `apt-get install gcc` where they
are missing; deploy/ingestd.Dockerfile's builder stage does), then the wheel takes it and is
tagged for this platform. For an editable install (`uv sync`, `make setup`) the module is built
into the source tree beside the Python it serves, where the editable install finds it (git
ignores it); uv rebuilds it when the C file changes (`cache-keys` in pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_MODULE = "ingestd._rowscan"
_SOURCE = "src/ingestd/_rowscan.c"


class RowscanBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        from setuptools import Distribution, Extension
        from setuptools.command.build_ext import build_ext

        root = Path(self.root)
        with tempfile.TemporaryDirectory() as temp:
            extension = Extension(_MODULE, [str(root / _SOURCE)], extra_compile_args=["-O2"])
            command = build_ext(Distribution({"name": "fleet-ingestd", "ext_modules": [extension]}))
            command.build_lib = str(Path(temp) / "lib")
            command.build_temp = str(Path(temp) / "temp")
            command.ensure_finalized()
            command.run()
            built = Path(command.get_ext_fullpath(_MODULE))
            name = built.name
            if version == "editable":
                # a new file put in place, not the loaded one written over: a process that has
                # the module loaded (make dev beside a test run) keeps its copy
                target = root / "src" / "ingestd" / name
                staged = target.with_name(f".{name}.new")
                shutil.copy2(built, staged)
                os.replace(staged, target)
            else:
                kept = Path(self.directory) / f".rowscan-{name}"
                shutil.copy2(built, kept)
                build_data["force_include"][str(kept)] = f"ingestd/{name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        """The module copied beside the wheel for it to take is not left in the output folder."""
        for kept in build_data.get("force_include", {}):
            if Path(kept).name.startswith(".rowscan-"):
                Path(kept).unlink(missing_ok=True)
