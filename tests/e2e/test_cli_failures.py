"""Both commands as an operator meets them: expected failures are one line and a documented exit
status, never a traceback (unless the log level is debug); --help lists the variables; --version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from fleetdev.pgcluster import PgCluster, free_port
from ingestd.settings import Settings as IngestdSettings
from pusher.settings import Settings as PusherSettings

BASE = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "PUSHER_", "FLEET_"))}


def _unreachable() -> str:
    return f"postgresql://fleet@127.0.0.1:{free_port()}/nothing"


def _run(service: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", service, *args], env={**BASE, **env},
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["migrate"],
        ["customers", "list"],
        ["customers", "add", "DEV0009"],
        ["customers", "revoke", "DEV0009"],
    ],
)
def test_ingestd_commands_with_the_database_down_say_so_in_one_line(args: list[str]) -> None:
    """Every ingestd administration command meets an unreachable database with exit status 1 and
    one line on stderr naming the cause; nothing on stdout, no traceback."""
    proc = _run("ingestd", *args, INGESTD_DATABASE_URL=_unreachable())
    assert proc.returncode == 1
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("ingestd: database unreachable: connection failed")


@pytest.mark.parametrize("args", [["migrate"], ["status"], ["check"]])
def test_pusher_commands_with_the_database_down_say_so_in_one_line_each(args: list[str]) -> None:
    """Every pusher command meets an unreachable customer database with exit status 1 and one
    line on stderr per problem, no traceback."""
    proc = _run("pusher", *args, PUSHER_DATABASE_URL=_unreachable())
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "customer database unreachable: connection failed" in lines[0]
    assert "Traceback" not in proc.stdout


def test_ingestd_serve_with_the_database_down_is_one_json_line_and_status_1() -> None:
    """`ingestd serve` that cannot reach its database ends with exit status 1; in JSON mode every
    line it printed is a JSON object and the last says `start_failed` with the reason."""
    proc = _run("ingestd", "serve", INGESTD_DATABASE_URL=_unreachable(),
                INGESTD_CONNECT_TIMEOUT_S="1", INGESTD_LOG_FORMAT="json", INGESTD_PORT=str(free_port()))  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr == ""
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1]["event"] == "start_failed" and lines[-1]["service"] == "ingestd"
    assert "cannot connect to the database" in lines[-1]["error"]
    assert "exception" not in lines[-1]


def test_debug_level_adds_the_traceback() -> None:
    """With the log level at debug the same failure also shows its traceback, for bug hunts."""
    proc = _run("ingestd", "customers", "list", INGESTD_DATABASE_URL=_unreachable(),
                INGESTD_LOG_LEVEL="debug")  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("ingestd: database unreachable")
    assert "Traceback (most recent call last)" in proc.stderr


@pytest.mark.parametrize("service", ["ingestd", "pusher"])
def test_configuration_error_is_status_2_naming_the_variable(service: str) -> None:
    """A malformed variable stops any command with exit status 2 and one line naming it."""
    prefix = "INGESTD" if service == "ingestd" else "PUSHER"
    proc = _run(service, "migrate", **{f"{prefix}_DATABASE_URL": "mysql://nope"})
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert f"{prefix}_DATABASE_URL must be a postgresql:// URL" in line


@pytest.mark.parametrize(
    ("service", "command", "settings"),
    [("ingestd", "serve", IngestdSettings), ("pusher", "run", PusherSettings)],
)
def test_help_lists_every_variable_with_its_default_and_the_exit_statuses(
    service: str, command: str, settings: type[IngestdSettings] | type[PusherSettings]
) -> None:
    """`serve --help` / `run --help` list every variable the settings read, with its default,
    and the exit statuses; --version prints the installed version."""
    out = _run(service, command, "--help").stdout
    variables = settings.variables()
    assert len(variables) > 15
    for var in variables:
        line = next(line for line in out.splitlines() if line.split()[:1] == [var.name])
        assert ("required" if var.default is None else (var.default or "unset")) in line
    assert "exit status: 0 done; 1 failed" in out
    assert _run(service, "--version").stdout.strip() == f"{service} {version(f'fleet-{service}')}"


def test_readme_documents_every_variable_the_settings_read() -> None:
    """The README's tables name every variable either service reads (the help's own source)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for settings in (IngestdSettings, PusherSettings):
        missing = [v.name for v in settings.variables() if f"`{v.name}`" not in readme]
        assert missing == []


def _into_a_closed_pipe(service: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command whose stdout's reader is already gone, as in `pusher status | head -0`."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", service, *args], env={**BASE, **env},
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                              check=False)  # fmt: skip
    finally:
        os.close(write_end)


def test_pusher_status_into_a_closed_pipe_ends_quietly(pg_cluster: PgCluster) -> None:
    """`pusher status | head -1` used to log a critical `uncaught_exception` (BrokenPipeError)."""
    dsn = pg_cluster.create_database("status_pipe")
    migrated = _run("pusher", "migrate", PUSHER_DATABASE_URL=dsn)
    assert migrated.returncode == 0, migrated.stderr
    proc = _into_a_closed_pipe("pusher", "status", PUSHER_DATABASE_URL=dsn)
    assert (proc.returncode, proc.stderr) == (1, "")


def test_former_pusher_names_warn_once_each() -> None:
    """`pusher` run with a former FLEET_* name works and logs one `deprecated_variable` warning
    naming the new one (on stderr for a one-shot command, whose stdout is its result)."""
    proc = _run("pusher", "status", FLEET_DATABASE_URL=_unreachable(), PUSHER_LOG_FORMAT="json")
    warning, failure = proc.stderr.splitlines()
    entry = json.loads(warning)
    assert (entry["event"], entry["name"], entry["use"]) == (
        "deprecated_variable", "FLEET_DATABASE_URL", "PUSHER_DATABASE_URL",
    )  # fmt: skip
    assert failure.startswith("pusher: customer database unreachable")
