"""scripts/bootstrap.sh, the first thing a fresh clone runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bootstrap_installs_the_uv_the_images_are_built_with() -> None:
    """The uv a fresh machine gets from bootstrap.sh is the version every Dockerfile copies in."""
    (pinned,) = re.findall(r"^UV_VERSION=(\S+)$", (ROOT / "scripts/bootstrap.sh").read_text(), re.M)
    images = {
        path.name: re.findall(r"ghcr\.io/astral-sh/uv:([\w.]+)", path.read_text())
        for path in (ROOT / "deploy").glob("*.Dockerfile")
    }
    assert images and all(images.values())
    assert {name: set(tags) for name, tags in images.items()} == {name: {pinned} for name in images}
