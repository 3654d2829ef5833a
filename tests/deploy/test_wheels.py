"""The wheels stand alone: `uv build --all-packages` makes one fleet-* wheel per workspace member,
at the one VERSION, with pinned internal dependencies and the migrations inside; installed into a
fresh virtualenv outside the checkout, `ingestd migrate` and `pusher migrate` work."""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.deploy.dockerfile import REPO

VERSION = (REPO / "VERSION").read_text().strip()
MEMBERS = {  # distribution: (import name, folder)
    "fleet-core": ("fleetcore", "packages/fleetcore"),
    "fleet-dev": ("fleetdev", "packages/fleetdev"),
    "fleet-service": ("fleetservice", "packages/fleetservice"),
    "fleet-ingestd": ("ingestd", "services/ingestd"),
    "fleet-pusher": ("pusher", "services/pusher"),
}


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    return uv


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`uv build --all-packages` (sdists, and wheels built from them) into a temporary folder."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [_uv(), "build", "--all-packages", "--quiet", "-o", str(out)],
        cwd=REPO, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return out


PLATFORM_WHEELS = {"fleet-ingestd"}
"""Members with a C extension (ingestd's `_rowscan`): their wheel is tagged for this platform."""


def _wheel(dist: Path, name: str) -> Path:
    tag = "cp*-cp*-*" if name in PLATFORM_WHEELS else "py3-none-any"
    (found,) = dist.glob(f"{name.replace('-', '_')}-{VERSION}-{tag}.whl")
    return found


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(f"{wheel.name.split('-')[0]}-{VERSION}.dist-info/METADATA").decode()
    return email.parser.Parser().parsestr(text)


def test_every_member_builds_a_wheel_at_the_one_version(dist: Path) -> None:
    """Five fleet-* wheels and sdists, all at VERSION, with license, readme and py.typed, each
    holding its import package under the unchanged name; internal dependencies pinned to VERSION."""
    for name, (package, _) in MEMBERS.items():
        wheel = _wheel(dist, name)
        assert (dist / f"{name.replace('-', '_')}-{VERSION}.tar.gz").is_file()
        meta = _metadata(wheel)
        assert meta["Name"] == name and meta["Version"] == VERSION
        assert meta["License-Expression"] == "Apache-2.0"
        assert meta.get_all("License-File") == ["LICENSE"]
        assert meta["Description-Content-Type"] == "text/markdown" and name in meta.get_payload()
        internal = [r for r in meta.get_all("Requires-Dist") or [] if r.startswith("fleet-")]
        assert all(r.endswith(f"=={VERSION}") for r in internal), internal
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
        assert f"{package}/__init__.py" in names and f"{package}/py.typed" in names
    ingestd = _metadata(_wheel(dist, "fleet-ingestd")).get_all("Requires-Dist") or []
    assert {f"fleet-core=={VERSION}", f"fleet-service=={VERSION}"} <= set(ingestd)


def test_ingestd_wheel_holds_its_c_extension_built(dist: Path) -> None:
    """The ingestd wheel (built from its sdist, as pip would) holds the compiled scanner, and
    the sdist its C source."""
    with zipfile.ZipFile(_wheel(dist, "fleet-ingestd")) as zf:
        names = zf.namelist()
    assert [n for n in names if n.startswith("ingestd/_rowscan.") and n.endswith(".so")], names
    assert "ingestd/_rowscan.pyi" in names and "ingestd/_rowscan.c" not in names
    sdist = dist / f"fleet_ingestd-{VERSION}.tar.gz"
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
    assert any(m.endswith("src/ingestd/_rowscan.c") for m in members)
    assert any(m.endswith("hatch_extension.py") for m in members)
    assert not any(m.endswith(".so") for m in members), members


def test_migrations_ship_inside_the_service_wheels(dist: Path) -> None:
    """Each service wheel holds exactly the migration files of its package in the checkout."""
    for name in ("fleet-ingestd", "fleet-pusher"):
        package, folder = MEMBERS[name]
        source = REPO / folder / "src" / package / "migrations"
        expected = {f"{package}/migrations/{p.name}" for p in source.glob("*.sql")}
        with zipfile.ZipFile(_wheel(dist, name)) as zf:
            shipped = {n for n in zf.namelist() if n.startswith(f"{package}/migrations/")}
        assert expected and shipped == expected


def test_version_pinning_hooks_are_one_file() -> None:
    """The members that depend on other fleet-* members use the same hatch_build.py."""
    hooks = {p.read_text() for p in REPO.glob("services/*/hatch_build.py")}
    hooks |= {p.read_text() for p in REPO.glob("packages/*/hatch_build.py")}
    assert len(hooks) == 1


def _export(uv: str, package: str, out: Path) -> Path:
    target = out / f"{package}.txt"
    subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--package", package, "--no-emit-workspace",
         "--no-header", "-o", str(target)],
        cwd=REPO, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return target


def test_wheels_installed_outside_the_checkout_migrate_both_databases(
    dist: Path, tmp_path: Path, empty_central_db: str, empty_customer_db: str
) -> None:
    """A fresh virtualenv gets the locked third-party requirements, then the fleet wheels from the
    dist folder only (their pins resolved there); `ingestd migrate` and `pusher migrate`, run from
    a folder outside the checkout with no *_MIGRATIONS_DIR, apply every shipped migration."""
    uv = _uv()
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = str(venv / "bin/python")
    requirements = [_export(uv, p, tmp_path) for p in ("fleet-ingestd", "fleet-pusher")]
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", python, "--require-hashes",
         *(arg for r in requirements for arg in ("-r", str(r)))],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", python, "--no-index", "--find-links",
         str(dist), f"fleet-ingestd=={VERSION}", f"fleet-pusher=={VERSION}"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    where = subprocess.run(
        [python, "-c", "import ingestd, pusher; print(ingestd.__file__, pusher.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert str(REPO) not in where.stdout and where.stdout.count(str(venv)) == 2

    for command, variable, dsn, package in (
        ("ingestd", "INGESTD_DATABASE_URL", empty_central_db, "ingestd"),
        ("pusher", "PUSHER_DATABASE_URL", empty_customer_db, "pusher"),
    ):
        folder = REPO / MEMBERS[f"fleet-{package}"][1] / "src" / package / "migrations"
        count = len([p for p in folder.glob("*.sql") if not p.name.endswith(".rollback.sql")])
        result = subprocess.run(
            [str(venv / "bin" / command), "migrate"],
            cwd=tmp_path, env={**env, variable: dsn}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"\napplied {count} migration(s)" in f"\n{result.stdout}", result.stdout
        version = subprocess.run(
            [str(venv / "bin" / command), "--version"], env=env, capture_output=True, text=True
        )
        assert version.stdout.strip() == f"{command} {VERSION}"
