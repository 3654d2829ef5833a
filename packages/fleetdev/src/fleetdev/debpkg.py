"""`make deb`: the pusher as a Debian package for customer gateways.

    python -m fleetdev.debpkg [--out dist] [--arch amd64|arm64] [--no-lintian]

Builds `dist/fleet-pusher_<version>_<arch>.deb` from the repository (run from its root):

    /opt/fleet-pusher/                  a virtualenv (Debian's python3.11) with the pusher's wheels
                                        and its locked dependencies (hashes checked); the
                                        migrations are inside the pusher wheel
    /usr/bin/fleet-pusher               -> /opt/fleet-pusher/bin/pusher
    /lib/systemd/system/fleet-pusher.service   deploy/systemd's hardened unit
    /etc/fleet/pusher.env               conffile, deploy/systemd's example (pushing disabled)
    /usr/share/doc/fleet-pusher/        copyright, changelog
    /usr/share/man/man1/fleet-pusher.1.gz
    /usr/share/lintian/overrides/fleet-pusher   the tags that remain, each with its reason

Another architecture than the build machine's (`make deb ARCH=arm64` on amd64) needs no emulation
to build: the third-party wheels are taken for that platform (uv's `--python-platform`, binary
wheels only), Fleet's own wheels are pure Python, and the virtualenv's interpreter is Debian's
/usr/bin/python3.11 of the gateway. armhf is not offered: psycopg-binary publishes no armv7
wheels (and uv has no armv7 target).

The layout follows how Telegraf and Vector ship theirs (unit in /lib/systemd/system, settings as
conffiles under /etc, maintainer scripts that reload systemd and restart on upgrade), with a
self-contained virtualenv under /opt as dh-virtualenv does; deploy/debian/ holds the maintainer
scripts and the texts. The virtualenv is made relocatable (uv's `--relocatable`), so it is built in a
staging folder and works from /opt. Built with `dpkg-deb --root-owner-group`, checked by lintian.
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fleetdev.engine import EngineMissing, apt_install

__all__ = ["build_deb", "lintian", "main"]

PACKAGE = "fleet-pusher"
PREFIX = "opt/fleet-pusher"
PYTHON = "/usr/bin/python3.11"
MAINTAINER = "Fleet maintainers <maintainers@users.noreply.r-seed-1e157579.example>"
WORKSPACE_WHEELS = ("fleet_core", "fleet_service", "fleet_pusher")
CONFFILE = "etc/fleet/pusher.env"
# Debian architecture -> the wheels' platform (bookworm's glibc is 2.36), and the binutils that
# strip its objects (Debian's package, installed when missing).
PLATFORMS = {"amd64": "x86_64-manylinux_2_36", "arm64": "aarch64-manylinux_2_36"}
STRIP = {"amd64": ("x86_64-linux-gnu-strip", "binutils-x86-64-linux-gnu"),
         "arm64": ("aarch64-linux-gnu-strip", "binutils-aarch64-linux-gnu")}  # fmt: skip
# What the pusher never reads in its dependencies: type stubs, Cython and C sources, test suites.
DEAD_SUFFIXES = (".pyi", ".pyx", ".pxd", ".pxi", ".c", ".h")
# The last line of the sh part of uv's relocatable entry points (the Python code follows).
_POLYGLOT_END = "\n' " + "'" * 3 + "\n"


def _run(*argv: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _uv(repo: Path) -> str:
    """$UV, uv on the PATH, or the one scripts/bootstrap.sh put in the checkout's .tools/."""
    bootstrapped = repo / ".tools/bin/uv"
    found = os.environ.get("UV") or shutil.which("uv")
    found = found or (str(bootstrapped) if bootstrapped.is_file() else None)
    if found is None:
        raise RuntimeError("uv is needed (scripts/bootstrap.sh installs it)")
    return found


def _install_venv(repo: Path, root: Path, work: Path, arch: str, foreign: str | None) -> str:
    """The virtualenv at root/opt/fleet-pusher, its wheels for the `foreign` platform when the
    package is for another architecture than this machine's; returns the pusher's version."""
    uv = _uv(repo)
    wheels = work / "wheels"
    for name in WORKSPACE_WHEELS:
        package = name.replace("_", "-")
        _run(uv, "build", "--package", package, "--wheel", "--quiet", "-o", wheels, cwd=repo)
    requirements = work / "requirements.txt"
    _run(
        uv, "export", "--frozen", "--no-dev", "--package", "fleet-pusher", "--no-emit-workspace",
        "--no-header", "-o", requirements, cwd=repo,
    )  # fmt: skip
    venv = root / PREFIX
    _run(uv, "venv", "--quiet", "--relocatable", "--python", PYTHON, venv)
    python = venv / "bin/python"
    platform = ["--python-platform", foreign, "--only-binary", ":all:"] if foreign else []
    # Copies, not uv's default hard links into its cache: the build strips these files, and
    # through a hard link that would rewrite every other virtualenv's copy on the machine.
    _run(
        uv, "pip", "install", "--quiet", "--python", python, "--no-compile", "--require-hashes",
        "--link-mode", "copy", *platform, "-r", requirements,
    )  # fmt: skip
    ours = [
        next(wheels.glob(f"{name}-*.whl"), None) or _missing(name, wheels)
        for name in WORKSPACE_WHEELS
    ]
    _run(uv, "pip", "install", "--quiet", "--python", python, "--no-deps", "--no-compile",
         "--link-mode", "copy", *ours)  # fmt: skip
    # Only the interpreter links and the pusher's own command stay in bin/ (not the activation
    # scripts, nor the console scripts of the dependencies); the command gets the interpreter's
    # final path as its #! line instead of uv's sh/python polyglot, as dh-virtualenv does.
    for script in venv.glob("bin/*"):
        if script.name == "pusher":
            code = script.read_text().split(_POLYGLOT_END, 1)[-1]
            script.write_text(f"#!/{PREFIX}/bin/python\n{code}")
        elif not script.name.startswith("python"):
            script.unlink()
    _trim(venv, arch)
    (venv / ".gitignore").unlink(missing_ok=True)
    (venv / "CACHEDIR.TAG").unlink(missing_ok=True)
    return ours[-1].name.split("-")[1]


def _trim(venv: Path, arch: str) -> None:
    """Drop the dependencies' dead weight: their test suites, stubs and sources, and the
    symbol tables of their extension modules (strip --strip-unneeded, as dh_strip does; the
    libraries auditwheel bundled in `*.libs/` are left as built). Their RECORD hashes then
    no longer match those files, as in any Debian-packaged Python module."""
    site = next(venv.glob("lib/python3*/site-packages"))
    for tests in [p for p in site.glob("*/tests") if p.is_dir()]:
        shutil.rmtree(tests)
    for path in site.rglob("*"):
        if path.is_dir() and path.name == "__pycache__":
            shutil.rmtree(path)
    for path in list(site.rglob("*")):
        if path.is_file() and path.suffix in DEAD_SUFFIXES:
            path.unlink()
    tool, package = STRIP[arch]
    if shutil.which(tool) is None:
        try:
            apt_install([package], say=lambda _: None)
        except EngineMissing:
            return  # shipped unstripped (lintian's override says so)
    modules = [p for p in site.rglob("*.so") if not any(d.endswith(".libs") for d in p.parts)]
    shared = [str(p) for p in modules if p.stat().st_nlink > 1]
    if shared:  # strip rewrites a hard-linked file in place, for every link
        raise RuntimeError(f"refusing to strip hard-linked files: {', '.join(shared[:3])}")
    if modules:
        _run(tool, "--strip-unneeded", *modules)


def _missing(name: str, folder: Path) -> Path:
    raise RuntimeError(f"uv build made no {name} wheel in {folder}")


def _doc(repo: Path, root: Path, version: str, when: float) -> None:
    source = repo / "deploy/debian"
    doc = root / "usr/share/doc" / PACKAGE
    doc.mkdir(parents=True)
    shutil.copy(source / "copyright", doc / "copyright")
    changelog = (
        f"{PACKAGE} ({version}) stable; urgency=medium\n\n"
        f"  * Built from the Fleet repository; see its git history for the changes.\n\n"
        f" -- {MAINTAINER}  {email.utils.formatdate(when)}\n"
    )
    (doc / "changelog.gz").write_bytes(gzip.compress(changelog.encode(), mtime=int(when)))
    man = root / "usr/share/man/man1"
    man.mkdir(parents=True)
    page = (source / f"{PACKAGE}.1").read_bytes()
    (man / f"{PACKAGE}.1.gz").write_bytes(gzip.compress(page, compresslevel=9, mtime=int(when)))
    overrides = root / "usr/share/lintian/overrides"
    overrides.mkdir(parents=True)
    shutil.copy(source / "lintian-overrides", overrides / PACKAGE)


def _installed_size_kib(root: Path) -> int:
    total = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += (path.stat().st_size + 1023) // 1024
        else:
            total += 1
    return total


def _glibc_floor(venv: Path) -> str:
    """The newest glibc any installed wheel's manylinux tag asks for (2.17 at least)."""
    floor = (2, 17)
    for wheel in venv.glob("lib/python3*/site-packages/*.dist-info/WHEEL"):
        for found in re.findall(r"manylinux_(\d+)_(\d+)_", wheel.read_text()):
            floor = max(floor, (int(found[0]), int(found[1])))
    return f"{floor[0]}.{floor[1]}"


def _control(repo: Path, root: Path, version: str, arch: str) -> None:
    debian = root / "DEBIAN"
    debian.mkdir()
    template = (repo / "deploy/debian/control").read_text()
    (debian / "control").write_text(
        template.format(
            version=version,
            arch=arch,
            maintainer=MAINTAINER,
            installed_size=_installed_size_kib(root),
            glibc=_glibc_floor(root / PREFIX),
        )
    )
    (debian / "conffiles").write_text(f"/{CONFFILE}\n")
    for script in ("postinst", "prerm", "postrm"):
        shutil.copy(repo / "deploy/debian" / script, debian / script)
        (debian / script).chmod(0o755)
    sums = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] == "DEBIAN" or path.is_symlink() or not path.is_file():
            continue
        if str(relative) == CONFFILE:
            continue
        sums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {relative}\n")  # noqa: S324
    (debian / "md5sums").write_text("".join(sums))


def build_deb(repo: Path, out: Path, arch: str | None = None) -> Path:
    """Build the package for `arch` (this machine's by default) into `out`; its path."""
    native = _run("dpkg", "--print-architecture").strip()
    arch = arch or native
    if arch not in PLATFORMS:
        raise RuntimeError(f"architecture {arch} is not supported ({', '.join(PLATFORMS)} are)")
    foreign = PLATFORMS[arch] if arch != native else None
    when = float(_run("git", "log", "-1", "--format=%ct", cwd=repo).strip() or time.time())
    with tempfile.TemporaryDirectory(prefix="fleet-deb-") as tmp:
        work = Path(tmp)
        root = work / "root"
        version = _install_venv(repo, root, work, arch, foreign)
        bin_dir = root / "usr/bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / PACKAGE).symlink_to(f"/{PREFIX}/bin/pusher")
        unit = root / "lib/systemd/system"
        unit.mkdir(parents=True)
        shutil.copy(repo / "deploy/systemd/fleet-pusher.service", unit / "fleet-pusher.service")
        conf = root / CONFFILE
        conf.parent.mkdir(parents=True)
        shutil.copy(repo / "deploy/systemd/fleet-pusher.env.example", conf)
        conf.chmod(0o640)
        conf.parent.chmod(0o755)
        _doc(repo, root, version, when)
        for path in root.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
            elif path.is_file() and not path.is_symlink() and path != conf:
                path.chmod(0o755 if path.parent == root / PREFIX / "bin" else 0o644)
        _control(repo, root, version, arch)
        out.mkdir(parents=True, exist_ok=True)
        deb = out / f"{PACKAGE}_{version}_{arch}.deb"
        built = subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "-z1", "--threads-max=0", "--build",
             str(root), str(deb)],
            env={**os.environ, "SOURCE_DATE_EPOCH": str(int(when))},
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if built.returncode != 0:
            raise RuntimeError(f"dpkg-deb failed:\n{built.stderr[-3000:]}")
    return deb


def lintian(deb: Path) -> subprocess.CompletedProcess[str]:
    """lintian on the package, failing on warnings and errors (overrides applied)."""
    return subprocess.run(
        ["lintian", "--fail-on", "error,warning", "--display-info", str(deb)],
        capture_output=True,
        text=True,
        timeout=900,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make deb", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("dist"), help="output folder")
    parser.add_argument(
        "--arch", choices=sorted(PLATFORMS), help="Debian architecture (this machine's)"
    )
    parser.add_argument("--no-lintian", action="store_true", help="skip the lintian check")
    args = parser.parse_args(argv)
    repo = Path.cwd()
    if not (repo / "deploy/debian/control").is_file():
        print("run from the repository root (deploy/debian/control not found)", file=sys.stderr)
        return 2
    if shutil.which("dpkg-deb") is None:
        print("deb: dpkg-deb is needed (Debian's dpkg package)", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        deb = build_deb(repo, args.out, args.arch)
    except RuntimeError as exc:
        print(f"deb: {exc}", file=sys.stderr)
        return 1
    print(f"deb: {deb} ({deb.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - started:.0f} s")
    if args.no_lintian:
        return 0
    if shutil.which("lintian") is None:
        print("deb: lintian is not installed (apt-get install lintian); not checked")
        return 0
    result = lintian(deb)
    print(result.stdout, end="")
    print(f"deb: lintian {'clean' if result.returncode == 0 else 'FAILED'}")
    return 0 if result.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
