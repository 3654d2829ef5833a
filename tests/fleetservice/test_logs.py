"""One log stream: structlog's lines and the standard library's, rendered alike."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Everything a service process emits: its own lines, a library's lines through `logging`
# (with and without an exception), a warning, a line below the level, and an exception
# nobody caught.
SCRIPT = textwrap.dedent(
    """
    import logging, sys, warnings
    import structlog
    from fleetservice.logs import configure_logging

    configure_logging(sys.argv[1], sys.argv[2], service="demo")
    log = structlog.get_logger("demo.part")

    def leaky(password="hunter2-secret"):
        raise ZeroDivisionError("boom")

    log.info("started", port=8080)
    log.debug("noise")
    logging.getLogger("psycopg.pool").warning("error connecting in %r", "pool")
    try:
        leaky()
    except ZeroDivisionError:
        log.exception("batch_failed", batch=3)
        logging.getLogger("aiohttp.server").exception("Error handling request")
    warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    leaky()
    """
)


def _run(fmt: str, level: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", SCRIPT, fmt, level],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_json_mode_every_line_is_a_json_object_with_the_service() -> None:
    """In JSON mode every line a process prints — its own, a library's, a warning, an uncaught
    exception — is one JSON object on stdout with level, logger, service and timestamp."""
    proc = _run("json", "info")
    assert proc.returncode == 1
    assert proc.stderr == ""
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["logger"], e["event"].split()[0]) for e in lines] == [
        ("demo.part", "started"),
        ("psycopg.pool", "error"),
        ("demo.part", "batch_failed"),
        ("aiohttp.server", "Error"),
        ("py.warnings", lines[4]["event"].split()[0]),
        ("fleet", "uncaught_exception"),
    ]
    for entry in lines:
        assert entry["service"] == "demo"
        assert {"level", "timestamp"} <= entry.keys()
    assert lines[0]["port"] == 8080
    assert "DeprecationWarning: deprecated thing" in lines[4]["event"]
    for failed in (lines[2], lines[3], lines[5]):
        (exc,) = failed["exception"]
        assert exc["exc_type"] == "ZeroDivisionError"
        assert exc["frames"][-1]["name"] == "leaky"
    assert "hunter2-secret" not in proc.stdout  # frame locals stay out of the log


def test_log_level_setting_filters_both_streams() -> None:
    """`debug` shows structlog's debug lines; `error` hides the library's warning and our info."""
    debug = _run("json", "debug")
    assert any(json.loads(line)["event"] == "noise" for line in debug.stdout.splitlines())
    quiet = _run("json", "error")
    events = [json.loads(line)["event"] for line in quiet.stdout.splitlines()]
    assert events[0] == "batch_failed"
    assert "started" not in events


@pytest.mark.parametrize("bad", [("xml", "info"), ("json", "verbose")])
def test_unknown_format_or_level_is_refused(bad: tuple[str, str]) -> None:
    """An unknown format or level is an error naming the allowed values, not a silent default."""
    from fleetservice.logs import configure_logging

    with pytest.raises(ValueError, match="must be one of"):
        configure_logging(*bad, service="demo")


def test_console_mode_renders_library_lines_too() -> None:
    """In console mode a library's line is rendered by the same console renderer (no bare text)."""
    proc = _run("console", "info")
    library = next(line for line in proc.stdout.splitlines() if "error connecting" in line)
    assert "psycopg.pool" in library and "service" in library
    assert "hunter2-secret" not in proc.stdout
