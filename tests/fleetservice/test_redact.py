"""Database passwords and URL credentials never reach a line either service writes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import pytest
from fleetdev.pgcluster import free_port
from fleetservice.redact import dsn_secrets, redact, shown_url


def test_secrets_of_a_database_url() -> None:
    """A URL's password is found as written, decoded, with its user, and from `password=`."""
    found = dsn_secrets("postgresql://fleet:s3cr%40t@db:5432/x?password=other")
    assert {"fleet:s3cr%40t", "s3cr%40t", "s3cr@t", "other"} <= set(found)
    assert dsn_secrets("postgresql://fleet@db/x") == ()
    assert shown_url("https://u:pw@ingest.example/api") == "https://ingest.example/api"
    assert shown_url("https://ingest.example/api") == "https://ingest.example/api"
    assert redact("nothing registered here") == "nothing registered here"


BAD_DSN = "postgresql://fleet:s3cr%zzet@127.0.0.1:{port}/x"


@pytest.mark.parametrize(
    ("argv", "variable", "extra"),
    [
        (["-m", "pusher", "status"], "PUSHER_DATABASE_URL", {}),
        (["-m", "ingestd", "customers", "list"], "INGESTD_DATABASE_URL", {}),
        (["-m", "ingestd", "serve"], "INGESTD_DATABASE_URL",
         {"INGESTD_CONNECT_TIMEOUT_S": "1", "INGESTD_LOG_FORMAT": "json"}),
        (["-m", "pusher", "run"], "PUSHER_DATABASE_URL",
         {"PUSHER_PUSH_ENABLED": "true", "PUSHER_INGEST_URL": "https://u:ingest-pw@127.0.0.1:1",
          "PUSHER_TOKEN": "flt_" + "a" * 43, "PUSHER_LOG_FORMAT": "json",
          "PUSHER_BACKOFF_CAP_S": "1", "PUSHER_BACKOFF_BASE_S": "1"}),
    ],
)  # fmt: skip
def test_a_bad_database_url_never_prints_its_password(
    argv: list[str], variable: str, extra: dict[str, str]
) -> None:
    """A database URL whose password has a bad percent-encoding makes psycopg quote it in its
    error; neither service prints it (nor the ingest URL's password), in any output."""
    env = {**os.environ, variable: BAD_DSN.format(port=free_port()), **extra}
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen([sys.executable, *argv], env=env, stdout=output, stderr=output)
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:  # bounded
                output.seek(0)
                if b"percent-encoded" in output.read():
                    break  # a daemon keeps retrying: what it wrote is enough
                time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait(timeout=10)
        output.seek(0)
        out = output.read().decode(errors="replace")
    assert "percent-encoded" in out
    assert "s3cr" not in out and "zzet" not in out and "ingest-pw" not in out
