"""Configuration from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pusher.errors import ConfigError
from pusher.settings import Settings

DB = "postgresql://fleet@127.0.0.1:5432/meters"
TOKEN = "flt_" + "a" * 43


def test_disabled_needs_only_the_database() -> None:
    """Without PUSHER_PUSH_ENABLED=true only PUSHER_DATABASE_URL is required (migrate, status)."""
    settings = Settings.from_env({"PUSHER_DATABASE_URL": DB})
    assert not settings.enabled and settings.batch_size == 5000 and settings.push_interval_s == 60


def test_enabled_requires_url_and_token_and_names_what_is_missing() -> None:
    """An enabled pusher without an ingest URL or token fails at start, naming the variable."""
    with pytest.raises(ConfigError, match="PUSHER_INGEST_URL"):
        Settings.from_env({"PUSHER_DATABASE_URL": DB, "PUSHER_PUSH_ENABLED": "true"})
    with pytest.raises(ConfigError, match="PUSHER_TOKEN"):
        Settings.from_env(
            {
                "PUSHER_DATABASE_URL": DB,
                "PUSHER_PUSH_ENABLED": "true",
                "PUSHER_INGEST_URL": "https://central.example",
            }
        )
    with pytest.raises(ConfigError, match="PUSHER_DATABASE_URL"):
        Settings.from_env({})


def test_token_from_file_and_never_in_repr(tmp_path: Path) -> None:
    """The token can come from a file; it and the database URL never appear in repr()."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = Settings.from_env(
        {
            "PUSHER_DATABASE_URL": "postgresql://fleet:s3cret@db/meters",
            "PUSHER_PUSH_ENABLED": "true",
            "PUSHER_INGEST_URL": "https://central.example/",
            "PUSHER_TOKEN_FILE": str(token_file),
        }
    )
    assert settings.token == TOKEN
    assert settings.ingest_url == "https://central.example/api/fleet/ingest"
    assert TOKEN not in repr(settings) and "s3cret" not in repr(settings)


def test_malformed_numbers_are_named() -> None:
    """A malformed or out-of-range number names its variable."""
    base = {"PUSHER_DATABASE_URL": DB}
    with pytest.raises(ConfigError, match="PUSHER_BATCH_SIZE"):
        Settings.from_env({**base, "PUSHER_BATCH_SIZE": "0"})
    with pytest.raises(ConfigError, match="PUSHER_PUSH_INTERVAL_S"):
        Settings.from_env({**base, "PUSHER_PUSH_INTERVAL_S": "soon"})
    with pytest.raises(ConfigError, match="PUSHER_BACKOFF_CAP_S"):
        Settings.from_env({**base, "PUSHER_BACKOFF_BASE_S": "60", "PUSHER_BACKOFF_CAP_S": "1"})


def test_metrics_listener_is_off_unless_a_port_is_set() -> None:
    """PUSHER_METRICS_PORT unset (or 0) keeps the listener off; a set port binds 127.0.0.1 unless
    PUSHER_METRICS_HOST says otherwise; a port out of range is named."""
    off = Settings.from_env({"PUSHER_DATABASE_URL": DB})
    assert off.metrics_port == 0 and off.metrics_host == "127.0.0.1"
    on = Settings.from_env(
        {
            "PUSHER_DATABASE_URL": DB,
            "PUSHER_METRICS_PORT": "9108",
            "PUSHER_METRICS_HOST": "10.0.0.5",
        }
    )
    assert on.metrics_port == 9108 and on.metrics_host == "10.0.0.5"
    with pytest.raises(ConfigError, match="PUSHER_METRICS_PORT"):
        Settings.from_env({"PUSHER_DATABASE_URL": DB, "PUSHER_METRICS_PORT": "70000"})


def test_former_fleet_names_still_work_and_are_noted() -> None:
    """A gateway configured with the former FLEET_* names keeps working; each old name is noted
    for a warning, and where both are set the PUSHER_* one wins."""
    settings = Settings.from_env(
        {
            "FLEET_DATABASE_URL": DB,
            "FLEET_BATCH_SIZE": "700",
            "PUSHER_BATCH_SIZE": "900",
            "FLEET_PUSH_INTERVAL_S": "5",
        }
    )
    assert settings.database_url == DB and settings.batch_size == 900
    assert settings.push_interval_s == 5
    assert set(settings.deprecated) == {
        ("FLEET_DATABASE_URL", "PUSHER_DATABASE_URL"),
        ("FLEET_BATCH_SIZE", "PUSHER_BATCH_SIZE"),
        ("FLEET_PUSH_INTERVAL_S", "PUSHER_PUSH_INTERVAL_S"),
    }
    assert Settings.from_env({"PUSHER_DATABASE_URL": DB}).deprecated == ()


def test_every_variable_has_the_pusher_prefix() -> None:
    """Every variable the pusher reads is PUSHER_* (FLEET_* belongs to the test and dev tooling);
    a new setting read under another prefix fails here."""
    names = [v.name for v in Settings.variables()]
    assert len(names) > 20
    assert [n for n in names if not n.startswith("PUSHER_")] == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://central.example", True),
        ("http://127.0.0.1:8080", True),
        ("http://[::1]:8080", True),
        ("http://localhost:8080", True),
        ("http://central.example", False),
        ("http://10.0.0.5:8080", False),
        ("http://user:pw@central.example", False),
    ],
)
def test_plain_http_only_to_this_machine(url: str, allowed: bool) -> None:
    """http:// to another host is refused at start (the token would travel in clear, a forged
    200 could move the cursor) unless PUSHER_ALLOW_PLAINTEXT=true; the message shows no
    userinfo."""
    env = {"PUSHER_DATABASE_URL": DB, "PUSHER_PUSH_ENABLED": "true", "PUSHER_INGEST_URL": url,
           "PUSHER_TOKEN": TOKEN}  # fmt: skip
    if allowed:
        assert not Settings.from_env(env).allow_plaintext
    else:
        with pytest.raises(ConfigError, match="PUSHER_ALLOW_PLAINTEXT") as caught:
            Settings.from_env(env)
        assert "pw" not in str(caught.value)
    settings = Settings.from_env({**env, "PUSHER_ALLOW_PLAINTEXT": "true"})
    assert settings.allow_plaintext and "pw@" not in settings.shown_ingest_url
