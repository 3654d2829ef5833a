"""deploy/systemd: the pusher unit verifies, rates ≤ 1.5 on systemd's exposure scale, and the
pusher works under its strictest options (writable+executable memory refused, sd_notify)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy.dockerfile import REPO, BuiltImage

UNIT = REPO / "deploy" / "systemd" / "fleet-pusher.service"
ENV_EXAMPLE = REPO / "deploy" / "systemd" / "fleet-pusher.env.example"
PUSHER_BIN = "/opt/fleet-pusher/bin/pusher"
MAN_PAGE = "Documentation=man:fleet-pusher(1)\n"
MAX_EXPOSURE = 1.5
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def _directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    return tool


def test_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (checked on a copy whose pusher path exists here)."""
    tool = _systemd_analyze()
    # The unit runs /opt/fleet-pusher/bin/pusher and documents itself with the fleet-pusher(1) man
    # page, both installed by the Debian package (test_deb.py verifies the installed unit); on a
    # machine without the package verify complains about those two and nothing else, so verify a
    # copy pointing at /bin/true with no Documentation= line.
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(PUSHER_BIN, "/bin/true").replace(MAN_PAGE, ""))
    result = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    original = subprocess.run(
        [tool, "verify", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in original.stderr.splitlines() if line.strip()]
    expected = ("is not executable", "Command 'man fleet-pusher(1)' failed")
    assert all(any(e in line for e in expected) for line in problems), problems


def test_security_exposure_is_at_most_1_5() -> None:
    """`systemd-analyze security --offline=true` rates the unit at an exposure of 1.5 or lower."""
    tool = _systemd_analyze()
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_has_the_required_shape() -> None:
    """Type=notify with a watchdog, restart on failure, check before start, token as a credential."""
    d = _directives()
    assert d["Type"] == ["notify"] and d["WatchdogSec"] and d["Restart"] == ["on-failure"]
    assert d["DynamicUser"] == ["yes"] and d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"] and d["CapabilityBoundingSet"] == [""]
    assert d["ExecStartPre"] == [f"{PUSHER_BIN} check"]
    assert d["ExecStart"] == [f"{PUSHER_BIN} run"]
    assert d["LoadCredential"] == ["token:/etc/fleet/pusher.token"]
    assert "PUSHER_TOKEN_FILE=%d/token" in d["Environment"]
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert d["MemoryDenyWriteExecute"] == ["yes"]


def test_env_example_documents_every_setting_and_no_secret() -> None:
    """The env file example sets every PUSHER_* setting the pusher reads (bar the token) and pushes nothing by default."""
    source = (REPO / "services/pusher/src/pusher/settings.py").read_text()
    read = set(re.findall(r'"(PUSHER_[A-Z_]+)"', source)) - {"PUSHER_TOKEN", "PUSHER_TOKEN_FILE"}
    lines = ENV_EXAMPLE.read_text().splitlines()
    example = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    set_by_unit = {"PUSHER_LOG_FORMAT"}
    assert read - set_by_unit <= example, read - set_by_unit - example
    assert "PUSHER_PUSH_ENABLED=false" in lines
    assert not any(line.startswith(("PUSHER_TOKEN=", "PUSHER_TOKEN_FILE=")) for line in lines)


def _mdwe_launcher(python: Path) -> list[str]:
    """Run a command with writable+executable memory refused by the kernel, as the unit's
    MemoryDenyWriteExecute=yes does with a seccomp filter."""
    code = (
        "import ctypes, mmap, os, sys\n"
        f"if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):\n"
        "    sys.exit(99)\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    sys.exit('MDWE not in force')\n"
        "except OSError:\n"
        "    pass\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    return [str(python), "-c", code]


def test_pusher_delivers_with_write_execute_memory_refused(
    pusher_image: BuiltImage, customer_db: str, threaded_ingestd: object, customer_token: str,
    central_db: str, tmp_path: Path,
) -> None:  # fmt: skip
    """`pusher check` and `pusher run` work when W+X memory is refused (MemoryDenyWriteExecute=yes)."""
    import psycopg

    probe = subprocess.run(
        [*_mdwe_launcher(pusher_image.root / ".venv/bin/python"), "/bin/true"], capture_output=True
    )
    if probe.returncode == 99:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert probe.returncode == 0, probe.stderr
    with psycopg.connect(customer_db) as conn:
        conn.execute(
            "INSERT INTO monitoring.sites (id, name, timezone) VALUES (7, 'MDWE site', 'UTC')"
        )
    token_file = tmp_path / "token"
    token_file.write_text(customer_token + "\n")
    env = pusher_image.environment(
        PUSHER_DATABASE_URL=customer_db,
        PUSHER_PUSH_ENABLED="true",
        PUSHER_INGEST_URL=threaded_ingestd.url,  # type: ignore[attr-defined]
        PUSHER_TOKEN_FILE=str(token_file),
        PUSHER_PUSH_INTERVAL_S="0.2",
    )
    launcher = _mdwe_launcher(pusher_image.root / ".venv/bin/python")
    pusher = str(pusher_image.root / ".venv/bin/pusher")
    check = subprocess.run([*launcher, pusher, "check"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    log = tmp_path / "pusher.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*launcher, pusher, "run"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while True:
            with psycopg.connect(central_db) as conn:
                row = conn.execute("SELECT name FROM fleet.sites WHERE id = 7").fetchone()
            if row:
                break
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert row[0] == "MDWE site"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0, log.read_text()


def test_pusher_run_notifies_systemd(
    pusher_image: BuiltImage, customer_db: str, threaded_ingestd: object, customer_token: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Under Type=notify, `pusher run` sends READY=1 and then WATCHDOG=1 to $NOTIFY_SOCKET."""
    probe = subprocess.run(
        [str(pusher_image.root / ".venv/bin/python"), "-c", "import pusher.ops.systemd"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("the pusher has no sd_notify support yet (pusher.ops.systemd; issue 5 item 2)")
    token_file = tmp_path / "token"
    token_file.write_text(customer_token + "\n")
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    env = pusher_image.environment(
        PUSHER_DATABASE_URL=customer_db,
        PUSHER_PUSH_ENABLED="true",
        PUSHER_INGEST_URL=threaded_ingestd.url,  # type: ignore[attr-defined]
        PUSHER_TOKEN_FILE=str(token_file),
        PUSHER_PUSH_INTERVAL_S="0.5",
        NOTIFY_SOCKET=str(sock_path),
        WATCHDOG_USEC="2000000",
    )
    log = tmp_path / "pusher.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(pusher_image.root / ".venv/bin/pusher"), "run"], env=env, stdout=out, stderr=out
        )
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
            any("READY=1" in m for m in messages) and any("WATCHDOG=1" in m for m in messages)
        ):
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                assert proc.poll() is None, log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        sock.close()
    assert any("READY=1" in m for m in messages), (messages, log.read_text())
    assert any("WATCHDOG=1" in m for m in messages), messages
