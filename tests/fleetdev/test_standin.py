"""fleetdev.standin's reading of this machine's apt sources and of the Dockerfiles' defaults."""

from __future__ import annotations

from pathlib import Path

from fleetdev.standin import debian_mirror, dockerfile_defaults

REPO = Path(__file__).resolve().parents[2]


def test_debian_mirror_reads_deb822_sources_and_skips_security(tmp_path: Path) -> None:
    """The bookworm archive of a deb822 .sources file is used, not the security archive."""
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_debian_mirror_reads_one_line_sources_with_options(tmp_path: Path) -> None:
    """A one-line `deb [options] URI bookworm main` entry is understood; none at all falls back."""
    assert debian_mirror(tmp_path) == "http://deb.debian.org/debian"
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://other.example/debian bookworm main\n"
    )
    assert debian_mirror(tmp_path) == "http://other.example/debian"


def test_dockerfile_defaults_are_the_official_bases() -> None:
    """The defaults `make images` tries to pull first are the official, pinned images."""
    defaults = dockerfile_defaults(REPO / "deploy/pusher.Dockerfile")
    assert defaults["PYTHON_IMAGE"] == "docker.io/library/python:3.11.11-slim-bookworm"
    assert defaults["UV_IMAGE"] == "ghcr.io/astral-sh/uv:0.13.9"
