"""Configuration from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pusher.errors import ConfigError
from pusher.settings import Settings

DB = "postgresql://fleet@127.0.0.1:5432/meters"
TOKEN = "flt_" + "a" * 43


def test_disabled_needs_only_the_database() -> None:
    """Without FLEET_PUSH_ENABLED=true only FLEET_DATABASE_URL is required (migrate, status)."""
    settings = Settings.from_env({"FLEET_DATABASE_URL": DB})
    assert not settings.enabled and settings.batch_size == 5000 and settings.push_interval_s == 60


def test_enabled_requires_url_and_token_and_names_what_is_missing() -> None:
    """An enabled pusher without an ingest URL or token fails at start, naming the variable."""
    with pytest.raises(ConfigError, match="FLEET_INGEST_URL"):
        Settings.from_env({"FLEET_DATABASE_URL": DB, "FLEET_PUSH_ENABLED": "true"})
    with pytest.raises(ConfigError, match="FLEET_TOKEN"):
        Settings.from_env(
            {
                "FLEET_DATABASE_URL": DB,
                "FLEET_PUSH_ENABLED": "true",
                "FLEET_INGEST_URL": "https://central.example",
            }
        )
    with pytest.raises(ConfigError, match="FLEET_DATABASE_URL"):
        Settings.from_env({})


def test_token_from_file_and_never_in_repr(tmp_path: Path) -> None:
    """The token can come from a file; it and the database URL never appear in repr()."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = Settings.from_env(
        {
            "FLEET_DATABASE_URL": "postgresql://fleet:s3cret@db/meters",
            "FLEET_PUSH_ENABLED": "true",
            "FLEET_INGEST_URL": "https://central.example/",
            "FLEET_TOKEN_FILE": str(token_file),
        }
    )
    assert settings.token == TOKEN
    assert settings.ingest_url == "https://central.example/api/fleet/ingest"
    assert TOKEN not in repr(settings) and "s3cret" not in repr(settings)


def test_malformed_numbers_are_named() -> None:
    """A malformed or out-of-range number names its variable."""
    base = {"FLEET_DATABASE_URL": DB}
    with pytest.raises(ConfigError, match="FLEET_BATCH_SIZE"):
        Settings.from_env({**base, "FLEET_BATCH_SIZE": "0"})
    with pytest.raises(ConfigError, match="FLEET_PUSH_INTERVAL_S"):
        Settings.from_env({**base, "FLEET_PUSH_INTERVAL_S": "soon"})
    with pytest.raises(ConfigError, match="FLEET_BACKOFF_CAP_S"):
        Settings.from_env({**base, "FLEET_BACKOFF_BASE_S": "60", "FLEET_BACKOFF_CAP_S": "1"})


def test_metrics_listener_is_off_unless_a_port_is_set() -> None:
    """FLEET_METRICS_PORT unset (or 0) keeps the listener off; a set port binds 127.0.0.1 unless
    FLEET_METRICS_HOST says otherwise; a port out of range is named."""
    off = Settings.from_env({"FLEET_DATABASE_URL": DB})
    assert off.metrics_port == 0 and off.metrics_host == "127.0.0.1"
    on = Settings.from_env(
        {"FLEET_DATABASE_URL": DB, "FLEET_METRICS_PORT": "9108", "FLEET_METRICS_HOST": "10.0.0.5"}
    )
    assert on.metrics_port == 9108 and on.metrics_host == "10.0.0.5"
    with pytest.raises(ConfigError, match="FLEET_METRICS_PORT"):
        Settings.from_env({"FLEET_DATABASE_URL": DB, "FLEET_METRICS_PORT": "70000"})
