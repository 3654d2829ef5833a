"""Pins this distribution's fleet-* dependencies to its own version in the built metadata.

Fleet's distributions are released together from one VERSION file; pyproject.toml lists the
dependencies unpinned under [tool.hatch.metadata.hooks.custom] (uv resolves fleet-* from the
workspace) and this hook gives them to the metadata with `fleet-core==<version>`, so an installed
fleet-pusher never runs on another release's fleet-core. A wheel built from the sdist reads them,
pinned, from PKG-INFO. The same file sits in every member that depends on another (a test keeps them equal).
"""

from __future__ import annotations

import re
from typing import Any

from hatchling.metadata.plugin.interface import MetadataHookInterface

_NAME = re.compile(r"^\s*(fleet-[a-z]+)\s*(?:[<>=!~;\[]|$)")


class FleetPinsHook(MetadataHookInterface):
    def update(self, metadata: dict[str, Any]) -> None:
        version = metadata["version"]
        pinned = []
        for requirement in self.config["dependencies"]:
            match = _NAME.match(requirement)
            pinned.append(f"{match.group(1)}=={version}" if match else requirement)
        metadata["dependencies"] = pinned
