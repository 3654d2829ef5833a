"""The gateway's Debian package, for real: built (`make deb`), checked by lintian, installed on this
machine with dpkg, run against a test stack, purged without a trace. Needs root and dpkg; skips
saying so otherwise."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetdev.debpkg import build_deb, lintian
from fleetdev.engine import EngineMissing, apt_install
from fleetdev.pgcluster import free_port

from tests.deploy.dockerfile import REPO
from tests.fix_customer import seed_inventory, seed_measurements
from tests.fix_ingestd import central_count

pytestmark = pytest.mark.deb

VERSION = (REPO / "VERSION").read_text().strip()
PACKAGE = "fleet-pusher"
# Where a package's files, maintainer state and systemd state can land.
WATCHED = (
    "/opt", "/etc", "/usr/bin", "/lib/systemd", "/usr/lib/systemd", "/usr/share/doc",
    "/usr/share/man/man1", "/usr/share/lintian/overrides", "/var/lib/systemd", "/var/lib/dpkg/info",
)  # fmt: skip
BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/fleet-pusher_<version>_<arch>.deb, built once for this module."""
    if os.geteuid() != 0 or shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None:
        pytest.skip("building and installing a .deb needs root and dpkg")
    return build_deb(REPO, tmp_path_factory.mktemp("deb"))


def _fleet_paths() -> set[str]:
    found: set[str] = set()
    for top in WATCHED:
        for folder, dirs, files in os.walk(top):
            for name in (*dirs, *files):
                path = os.path.join(folder, name)
                if "fleet" in path:
                    found.add(path)
    return found


def _dpkg(*args: str) -> subprocess.CompletedProcess[str]:
    """dpkg, waiting (bounded) while another process holds its lock (apt on a shared machine)."""
    deadline = time.monotonic() + 120
    while True:
        done = subprocess.run(["dpkg", *args], capture_output=True, text=True, timeout=300)
        if done.returncode == 0 or "lock" not in done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(2)


@pytest.fixture
def dpkg_turn(tmp_path: Path) -> Iterator[None]:
    """One test session at a time installs the package on this machine; left installed, purged."""
    with Path("/tmp/fleet-deb-test.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _dpkg("--purge", PACKAGE)
            yield
        finally:
            _dpkg("--purge", PACKAGE)
            fcntl.flock(lock, fcntl.LOCK_UN)


def assert_lintian_clean(deb: Path) -> None:
    """lintian reports no error, warning or info hint; what remains is overridden, each block of
    overrides under a comment giving the reason."""
    if shutil.which("lintian") is None:
        try:
            apt_install(["lintian"])
        except EngineMissing as exc:
            pytest.skip(f"lintian is not installed: {exc}")
    result = lintian(deb)
    assert result.returncode == 0, result.stdout + result.stderr
    hints = [line for line in result.stdout.splitlines() if line[:2] in {"E:", "W:", "I:"}]
    assert hints == []  # informational hints included
    overrides = (REPO / "deploy/debian/lintian-overrides").read_text().split("\n\n")
    assert all(block.lstrip().startswith("#") for block in overrides if block.strip())


def test_lintian_passes_with_only_justified_overrides(deb: Path) -> None:
    """lintian reports no error, warning or info hint on this machine's package; what remains is
    overridden, each block of overrides under a comment giving the reason."""
    assert_lintian_clean(deb)


def _run(*argv: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env={**BASE_ENV, **env}, capture_output=True, text=True, timeout=timeout
    )


def test_installed_package_migrates_checks_ships_rows_and_purges_without_trace(
    deb: Path, dpkg_turn: None, central_db: str, empty_customer_db: str, tmp_path: Path
) -> None:
    """dpkg -i gives /usr/bin/fleet-pusher (--version = the wheels'), the unit and the conffile with
    pushing off; `migrate` (migrations inside), `check` and a short `run` ship every row once to a
    test ingestd; dpkg --purge then leaves no file of the package anywhere."""
    before = _fleet_paths()
    installed = _dpkg("-i", str(deb))
    assert installed.returncode == 0, installed.stderr
    conffiles = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Conffiles}", PACKAGE], capture_output=True, text=True
    ).stdout
    assert "/etc/fleet/pusher.env" in conffiles
    settings = Path("/etc/fleet/pusher.env")
    assert "\nPUSHER_PUSH_ENABLED=false\n" in settings.read_text()
    assert settings.stat().st_mode & 0o777 == 0o640
    assert Path("/lib/systemd/system/fleet-pusher.service").is_file()
    version = _run("fleet-pusher", "--version", env={"HOME": str(tmp_path)})
    assert version.stdout.strip() == f"pusher {VERSION}", version.stderr
    if shutil.which("systemd-analyze"):
        verify = _run(
            "systemd-analyze", "verify", "/lib/systemd/system/fleet-pusher.service", env={}
        )
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr

    ingestd = str(Path(sys.executable).parent / "ingestd")
    added = _run(ingestd, "customers", "add", "DEB0001", env={"INGESTD_DATABASE_URL": central_db})
    assert added.returncode == 0, added.stderr
    port = free_port()
    server = subprocess.Popen(
        [ingestd, "serve"],
        env={**BASE_ENV, "INGESTD_DATABASE_URL": central_db, "INGESTD_HOST": "127.0.0.1",
             "INGESTD_PORT": str(port)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pusher_env = {
        "HOME": str(tmp_path),
        "PUSHER_DATABASE_URL": empty_customer_db,
        "PUSHER_PUSH_ENABLED": "true",
        "PUSHER_INGEST_URL": f"http://127.0.0.1:{port}",
        "PUSHER_TOKEN": added.stdout.strip(),
        "PUSHER_PUSH_INTERVAL_S": "0.3",
    }
    try:
        migrate = _run("fleet-pusher", "migrate", env={"PUSHER_DATABASE_URL": empty_customer_db})
        shipped = REPO / "services/pusher/src/pusher/migrations"
        count = len([m for m in shipped.glob("*.sql") if not m.name.endswith(".rollback.sql")])
        assert migrate.returncode == 0, migrate.stderr
        assert f"applied {count} migration(s)" in migrate.stdout
        seed_inventory(empty_customer_db, sites=1, devices=2)
        rows = seed_measurements(empty_customer_db, devices=2, stop=300)
        deadline = time.monotonic() + 30
        while (check := _run("fleet-pusher", "check", env=pusher_env)).returncode != 0:
            assert time.monotonic() < deadline, check.stdout + check.stderr  # ingestd starting
            time.sleep(0.5)
        run = subprocess.Popen(
            ["fleet-pusher", "run"], env={**BASE_ENV, **pusher_env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while central_count(central_db) < rows:
                assert run.poll() is None and time.monotonic() < deadline, "rows did not arrive"
                time.sleep(0.3)
        finally:
            run.send_signal(signal.SIGTERM)
            output, _ = run.communicate(timeout=30)
        assert run.returncode == 0, output[-3000:]
        assert central_count(central_db) == rows
    finally:
        server.terminate()
        server.wait(timeout=30)

    purged = _dpkg("--purge", PACKAGE)
    assert purged.returncode == 0, purged.stderr
    assert _fleet_paths() - before == set()
    assert not Path("/opt/fleet-pusher").exists() and not Path("/etc/fleet").exists()
