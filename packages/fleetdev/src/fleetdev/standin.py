"""Base images for the Dockerfiles: the official ones where they can be pulled, local stand-ins
made from Debian's packages where no registry is reachable.

The Dockerfiles take their bases as build arguments (`PYTHON_IMAGE`, `UV_IMAGE`), so the same file
builds from `python:3.11-slim-bookworm` and `ghcr.io/astral-sh/uv` elsewhere and from these here:

- `localhost/fleet-standin/python:3.11-bookworm`: `debootstrap --variant=minbase bookworm` from
  this machine's Debian mirror plus python3, python3-venv and ca-certificates (Debian bookworm's
  Python is 3.11, like the official image's), the machine's own extra certificate authorities
  (so builds behind a TLS-inspecting proxy reach PyPI), apt's caches and lists removed.
  The root filesystem is kept as a tarball under `.state/images/` and imported from there when
  the engine's storage lost the image.
- `localhost/fleet-standin/uv:<version>`: `/uv`, as in the official uv image, from PyPI's `uv`
  wheel of the same version (deploy/standin/uv.Dockerfile).
- `localhost/fleet-standin/postgres:15-bookworm`: the central database of `make dev
  CENTRAL=timescale` where the TimescaleDB image cannot be pulled (deploy/standin/postgres.Dockerfile):
  Debian's PostgreSQL 15, started the way the official images start (POSTGRES_PASSWORD, PGDATA).
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fleetdev.engine import Engine, apt_install

__all__ = [
    "PYTHON_STANDIN",
    "Bases",
    "debian_mirror",
    "dockerfile_defaults",
    "ensure_postgres_standin",
    "resolve_bases",
]

PYTHON_STANDIN = "localhost/fleet-standin/python:3.11-bookworm"
UV_STANDIN = "localhost/fleet-standin/uv:{version}"
POSTGRES_STANDIN = "localhost/fleet-standin/postgres:15-bookworm"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
_ARG = re.compile(r"^ARG\s+(\w+)=(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Bases:
    """The base images one build uses, and whether each is a local stand-in."""

    python: str
    uv: str
    python_standin: bool
    uv_standin: bool

    def build_args(self) -> list[str]:
        return ["--build-arg", f"PYTHON_IMAGE={self.python}", "--build-arg", f"UV_IMAGE={self.uv}"]


def dockerfile_defaults(dockerfile: Path) -> dict[str, str]:
    """The `ARG NAME=default` lines of a Dockerfile (the official bases)."""
    return dict(_ARG.findall(dockerfile.read_text()))


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The first Debian archive this machine's apt uses for bookworm (deb822 or one-line lists)."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.MULTILINE))
            if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", ""):
                uri = fields.get("URIs", "").split()
                if uri and "security" not in uri[0]:
                    return uri[0]
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    return "http://deb.debian.org/debian"


@contextmanager
def _locked(state: Path) -> Iterator[None]:
    """One stand-in build at a time per checkout (parallel test sessions share the engine)."""
    state.mkdir(parents=True, exist_ok=True)
    with (state / "standin.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pullable(engine: Engine, ref: str, say: Callable[[str], None]) -> bool:
    if engine.image_exists(ref):
        return True
    pulled = engine.run("pull", ref, check=False, timeout=600)
    if pulled.returncode == 0:
        return True
    reason = (pulled.stderr.strip().splitlines() or ["no answer"])[-1]
    say(f"{ref} cannot be pulled (…{reason[-120:]})")
    return False


def _rootfs_tarball(tarball: Path, say: Callable[[str], None]) -> None:
    """debootstrap the stand-in's root filesystem and pack it (needs root)."""
    if shutil.which("debootstrap") is None:
        apt_install(["debootstrap"], say)
    mirror = debian_mirror()
    say(f"debootstrap --variant=minbase {SUITE} from {mirror} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="fleet-standin-") as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
             str(root), mirror],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        local_cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        for ca in local_cas:
            shutil.copy2(ca, root / "usr/local/share/ca-certificates" / ca.name)
        if local_cas:
            subprocess.run(
                ["chroot", str(root), "update-ca-certificates"], check=True, capture_output=True
            )
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        for cache in (root / "var/cache/apt").glob("*.bin"):
            cache.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)


def _python_standin(engine: Engine, state: Path, say: Callable[[str], None]) -> str:
    if engine.image_exists(PYTHON_STANDIN):
        return PYTHON_STANDIN
    tarball = state / f"{SUITE}-python-rootfs.tar"
    if not tarball.exists():
        _rootfs_tarball(tarball, say)
    changes = [arg for change in IMPORT_CHANGES for arg in ("--change", change)]
    with tarball.open("rb") as tar:
        subprocess.run(
            engine.argv("import", *changes, "-", PYTHON_STANDIN),
            stdin=tar, env=engine.environ(), check=True, capture_output=True, timeout=600,
        )  # fmt: skip
    say(f"imported {PYTHON_STANDIN} from {tarball}")
    return PYTHON_STANDIN


def _uv_standin(
    engine: Engine, repo: Path, python: str, official: str, say: Callable[[str], None]
) -> str:
    version = official.rpartition(":")[2]
    ref = UV_STANDIN.format(version=version)
    if engine.image_exists(ref):
        return ref
    say(f"building {ref} (uv {version} from PyPI)")
    engine.run(
        "build", *engine.build_format(), "--build-arg", f"PYTHON_IMAGE={python}",
        "--build-arg", f"UV_VERSION={version}", "-f", str(repo / "deploy/standin/uv.Dockerfile"),
        "-t", ref, str(repo / "deploy/standin"),
    )  # fmt: skip
    return ref


def resolve_bases(
    engine: Engine, repo: Path, state: Path, say: Callable[[str], None], *, python: str = "",
    uv: str = "",
) -> Bases:  # fmt: skip
    """The official bases where present or pullable, stand-ins otherwise (made once, cached).

    `python`/`uv` force a base (make images PYTHON_IMAGE=… UV_IMAGE=…).
    """
    official = dockerfile_defaults(repo / "deploy/ingestd.Dockerfile")
    images = state / "images"
    with _locked(images):
        python_ref = python or official["PYTHON_IMAGE"]
        python_standin = not python and not _pullable(engine, python_ref, say)
        if python_standin:
            python_ref = _python_standin(engine, images, say)
            say(f"using the local stand-in {python_ref} for {official['PYTHON_IMAGE']}")
        uv_ref = uv or official["UV_IMAGE"]
        uv_standin = not uv and not _pullable(engine, uv_ref, say)
        if uv_standin:
            uv_ref = _uv_standin(engine, repo, python_ref, official["UV_IMAGE"], say)
            say(f"using the local stand-in {uv_ref} for {official['UV_IMAGE']}")
    return Bases(python_ref, uv_ref, python_standin, uv_standin)


def ensure_postgres_standin(
    engine: Engine, repo: Path, state: Path, say: Callable[[str], None]
) -> str:
    """The stand-in central database image, built once from the stand-in Python base."""
    images = state / "images"
    with _locked(images):
        if engine.image_exists(POSTGRES_STANDIN):
            return POSTGRES_STANDIN
        base = _python_standin(engine, images, say)
        say(f"building {POSTGRES_STANDIN} (Debian's postgresql-15)")
        engine.run(
            "build", *engine.build_format(), "--build-arg", f"BASE_IMAGE={base}",
            "-f", str(repo / "deploy/standin/postgres.Dockerfile"), "-t", POSTGRES_STANDIN,
            str(repo / "deploy/standin"),
        )  # fmt: skip
    return POSTGRES_STANDIN
