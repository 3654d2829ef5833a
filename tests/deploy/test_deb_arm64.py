"""The gateway's arm64 package, for real on this amd64 machine: `make deb ARCH=arm64` builds it
(no emulation needed), lintian finds nothing, and in an arm64 Debian root run under qemu it
installs with dpkg, answers `--version`, migrates a customer database on this host and pushes its
rows to an ingestd on this host, every row once. Skips saying why where qemu cannot run here."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleetdev.armroot import ArmRootMissing, arm_root, chroot_argv, chroot_run
from fleetdev.debpkg import build_deb
from fleetdev.pgcluster import free_port

from tests.deploy.dockerfile import REPO
from tests.deploy.test_deb import VERSION, assert_lintian_clean
from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count
from tests.fix_pg import scalar

pytestmark = pytest.mark.deb


@pytest.fixture(scope="module")
def arm_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/fleet-pusher_<version>_arm64.deb, built once for this module."""
    if os.geteuid() != 0 or shutil.which("dpkg-deb") is None:
        pytest.skip("building a .deb needs root and dpkg")
    return build_deb(REPO, tmp_path_factory.mktemp("deb-arm64"), "arm64")


def test_arm64_package_says_arm64_holds_no_numpy_and_is_lintian_clean(arm_deb: Path) -> None:
    """`dpkg-deb -I` shows Architecture: arm64, every compiled module in it is aarch64 code (not
    this machine's), numpy is not in it, and lintian is as clean as for the native package."""
    assert arm_deb.name == f"fleet-pusher_{VERSION}_arm64.deb"
    info = subprocess.run(["dpkg-deb", "-I", str(arm_deb)], capture_output=True, text=True)
    assert " Architecture: arm64\n" in info.stdout
    listing = subprocess.run(["dpkg-deb", "-c", str(arm_deb)], capture_output=True, text=True)
    assert "site-packages/numpy/" not in listing.stdout
    modules = [line.split()[-1] for line in listing.stdout.splitlines() if ".so" in line]
    assert modules and all("x86_64" not in m for m in modules)
    assert any("aarch64-linux-gnu.so" in m for m in modules)
    assert_lintian_clean(arm_deb)


def test_arm64_package_installs_migrates_and_ships_every_row_under_qemu(
    arm_deb: Path, central_db: str, empty_customer_db: str, tmp_path: Path
) -> None:
    """In an arm64 root under qemu: dpkg -i, `fleet-pusher --version` (on aarch64), `migrate`
    against this host's customer database, then `fleet-pusher run` ships 600 rows over loopback
    to this host's ingestd: all arrive, none twice, and the pusher stops cleanly on SIGTERM."""
    try:
        with arm_root(say=lambda _: None) as root:
            _install_and_push(root, arm_deb, central_db, empty_customer_db)
    except ArmRootMissing as exc:
        pytest.skip(f"no arm64 root under qemu here: {exc}")


def _install_and_push(root: Path, deb: Path, central_db: str, customer_db: str) -> None:
    shutil.copy(deb, root / "tmp" / deb.name)
    installed = chroot_run(root, ["dpkg", "-i", f"/tmp/{deb.name}"], {}, timeout=900)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    version = chroot_run(root, ["fleet-pusher", "--version"], {"HOME": "/root"})
    assert version.stdout.strip() == f"pusher {VERSION}", version.stderr
    machine = chroot_run(
        root,
        ["/opt/fleet-pusher/bin/python", "-c", "import platform; print(platform.machine())"],
        {},
    )
    assert machine.stdout.strip() == "aarch64", machine.stderr

    migrate = chroot_run(root, ["fleet-pusher", "migrate"], {"PUSHER_DATABASE_URL": customer_db})
    assert migrate.returncode == 0, migrate.stderr
    assert "applied" in migrate.stdout
    seed_inventory(customer_db, sites=1, devices=2)
    rows = seed_measurements(customer_db, devices=2, stop=300)

    ingestd = str(Path(sys.executable).parent / "ingestd")
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "INGESTD_DATABASE_URL": central_db}
    added = subprocess.run(
        [ingestd, "customers", "add", "ARM0001"], env=base, capture_output=True, text=True
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    server = subprocess.Popen(
        [ingestd, "serve"],
        env={**base, "INGESTD_HOST": "127.0.0.1", "INGESTD_PORT": str(port)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pusher_env = {
        "HOME": "/root",
        "PUSHER_DATABASE_URL": customer_db,
        "PUSHER_PUSH_ENABLED": "true",
        "PUSHER_INGEST_URL": f"http://127.0.0.1:{port}",
        "PUSHER_TOKEN": added.stdout.strip().splitlines()[0],
        "PUSHER_PUSH_INTERVAL_S": "0.5",
        "PUSHER_BATCH_SIZE": "250",
    }
    try:
        run = subprocess.Popen(
            chroot_argv(root, ["fleet-pusher", "run"], pusher_env),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300  # python under qemu starts in seconds, not ms
            while central_count(central_db) < rows:
                assert run.poll() is None and time.monotonic() < deadline, "rows did not arrive"
                time.sleep(0.5)
        finally:
            run.send_signal(signal.SIGTERM)
            output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, output[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert central_count(central_db) == rows
    events = "FROM fleet.ingest_events WHERE batch_type = 'measurements'"
    assert scalar(central_db, f"SELECT coalesce(sum(accepted), 0) {events}") == rows
    assert scalar(central_db, f"SELECT coalesce(sum(duplicates), 0) {events}") == 0
