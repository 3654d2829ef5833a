"""An arm64 Debian root on an amd64 machine, run under qemu-user: where the gateway's arm64 package
(`make deb ARCH=arm64`) is installed and run by tests/deploy/test_deb_arm64.py.

- qemu: Debian's qemu-user-static and binfmt-support (installed when missing, as root), the
  binfmt_misc file system mounted and its qemu-aarch64 entry enabled, so the kernel hands every
  aarch64 binary to qemu (the entry's F flag: qemu need not be inside the root).
- the root: `debootstrap --foreign --arch=arm64 --variant=minbase bookworm` plus python3.11 from
  this machine's Debian mirror, then its second stage inside the root, under qemu (several minutes
  on a loaded machine); apt's caches, documentation and locales removed; kept as a tarball in
  /var/cache/fleet (made once per machine, under a lock) and unpacked afresh for every use.

Every failure is `ArmRootMissing` saying why, so a test can skip with the reason.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from fleetdev.engine import EngineMissing, apt_install
from fleetdev.standin import SUITE, debian_mirror

__all__ = [
    "ARCH",
    "ArmRootMissing",
    "arm_root",
    "chroot_argv",
    "chroot_run",
    "ensure_qemu",
    "rootfs_tarball",
]

ARCH = "arm64"
CACHE = Path("/var/cache/fleet")
PACKAGES = ("python3.11",)
BINFMT = Path("/proc/sys/fs/binfmt_misc")
_LEFT_OUT = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
             "usr/share/locale", "usr/share/info")  # fmt: skip


class ArmRootMissing(RuntimeError):
    """No arm64 root can be run here; the message says why."""


def _root_only() -> None:
    if os.geteuid() != 0:
        raise ArmRootMissing("an arm64 root under qemu needs root (chroot, binfmt_misc)")


def ensure_qemu(say: Callable[[str], None] = print) -> None:
    """qemu-user for aarch64 registered with the kernel, or ArmRootMissing saying why not."""
    _root_only()
    needed = [p for p, tool in (("qemu-user-static", "qemu-aarch64-static"),
              ("binfmt-support", "update-binfmts"), ("debootstrap", "debootstrap"))
              if shutil.which(tool) is None]  # fmt: skip
    if needed:
        try:
            apt_install(needed, say)
        except (EngineMissing, subprocess.CalledProcessError) as exc:
            raise ArmRootMissing(f"cannot install {' '.join(needed)}: {exc}") from None
    if not (BINFMT / "register").exists():
        mounted = subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if mounted.returncode != 0:
            raise ArmRootMissing(f"binfmt_misc cannot be mounted: {mounted.stderr.strip()}")
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or "enabled" not in entry.read_text():
        subprocess.run(
            ["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, timeout=60
        )
    if not entry.exists() or "enabled" not in entry.read_text():
        raise ArmRootMissing("the kernel has no qemu-aarch64 binfmt entry (update-binfmts failed)")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def rootfs_tarball(say: Callable[[str], None] = print, cache: Path = CACHE) -> Path:
    """The cached arm64 root's tarball, debootstrapped first when there is none."""
    ensure_qemu(say)
    tarball = cache / f"{SUITE}-{ARCH}-python-rootfs.tar"
    with _locked(cache / f"{tarball.name}.lock"):
        if tarball.exists():
            return tarball
        mirror = debian_mirror()
        say(f"debootstrap --arch={ARCH} {SUITE} from {mirror} (several minutes under qemu, once)")
        with tempfile.TemporaryDirectory(prefix="fleet-armroot-", dir=cache) as tmp:
            root = Path(tmp) / "root"
            steps = (
                ["debootstrap", "--foreign", f"--arch={ARCH}", "--variant=minbase",
                 f"--include={','.join(PACKAGES)}", SUITE, str(root), mirror],
                ["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"],
            )  # fmt: skip
            for argv in steps:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
                if done.returncode != 0:
                    raise ArmRootMissing(f"{' '.join(argv[:3])} failed: {done.stderr[-500:]}")
            for leftover in _LEFT_OUT:
                shutil.rmtree(root / leftover, ignore_errors=True)
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
    return tarball


@contextmanager
def arm_root(say: Callable[[str], None] = print) -> Iterator[Path]:
    """A fresh arm64 root, unpacked from the cached tarball, removed afterwards."""
    tarball = rootfs_tarball(say)
    with tempfile.TemporaryDirectory(prefix="fleet-arm64-") as tmp:
        root = Path(tmp)
        subprocess.run(["tar", "-C", str(root), "-xf", str(tarball)], check=True, timeout=600)
        probe = chroot_run(root, ["/usr/bin/uname", "-m"], {}, timeout=120)
        if probe.stdout.strip() != "aarch64":
            raise ArmRootMissing(f"the arm64 root does not run here: {probe.stderr.strip()}")
        yield root


def chroot_argv(root: Path, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The command line running `argv` inside the root with only `env` (and a PATH) in its
    environment; `env` execs it, so a signal to the process reaches `argv` itself."""
    settings = [f"{k}={v}" for k, v in {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env}.items()]
    return ["chroot", str(root), "/usr/bin/env", "-i", *settings, *argv]


def chroot_run(
    root: Path, argv: Sequence[str], env: Mapping[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """`argv` inside the root (`chroot_argv`), run to its end."""
    return subprocess.run(
        chroot_argv(root, argv, env), capture_output=True, text=True, timeout=timeout
    )
