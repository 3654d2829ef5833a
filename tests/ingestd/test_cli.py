"""The `ingestd` command line: configuration errors and customer administration."""

from __future__ import annotations

import pytest
from fleetdev.pgcluster import PgCluster
from ingestd.cli import main
from ingestd.migrate import migration_ids
from ingestd.settings import ConfigError, Settings


def test_missing_database_url_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Starting without INGESTD_DATABASE_URL stops with a message naming it."""
    monkeypatch.delenv("INGESTD_DATABASE_URL", raising=False)
    assert main(["serve"]) == 2
    assert "INGESTD_DATABASE_URL is required" in capsys.readouterr().err


def test_malformed_setting_is_named() -> None:
    """A malformed number names its variable."""
    with pytest.raises(ConfigError, match="INGESTD_PORT must be an integer"):
        Settings.from_env(
            {"INGESTD_DATABASE_URL": "postgresql://x@localhost/db", "INGESTD_PORT": "http"}
        )


@pytest.mark.parametrize(
    ("name", "field", "value", "expected"),
    [
        ("INGESTD_ROLLUP_BATCH", "rollup_batch", None, "5000"),
        ("INGESTD_ROLLUP_BATCH", "rollup_batch", "20000", "20000"),
        ("INGESTD_ROLLUP_BATCH", "rollup_batch", "99", "must be 100..1000000, got 99"),
        ("INGESTD_ROLLUP_BATCH", "rollup_batch", "lots", "must be an integer, got 'lots'"),
        ("INGESTD_REFRESH_MAX_RANGES", "refresh_max_ranges", None, "20"),
        ("INGESTD_REFRESH_MAX_RANGES", "refresh_max_ranges", "200", "200"),
        ("INGESTD_REFRESH_MAX_RANGES", "refresh_max_ranges", "0", "must be 1..10000, got 0"),
        ("INGESTD_BUSY_RETURN_SHARE", "busy_return_share", None, "0.1"),
        ("INGESTD_BUSY_RETURN_SHARE", "busy_return_share", "0.25", "0.25"),
        ("INGESTD_BUSY_RETURN_SHARE", "busy_return_share", "0.1", "0.1"),
        ("INGESTD_BUSY_RETURN_SHARE", "busy_return_share", "0", "must be in \\(0, 1\\], got 0"),
        ("INGESTD_BUSY_RETURN_SHARE", "busy_return_share", "2", "must be in \\(0, 1\\], got 2"),
    ],
)
def test_housekeeping_sizes_are_read_from_the_environment(
    name: str, field: str, value: str | None, expected: str
) -> None:
    """INGESTD_ROLLUP_BATCH (device-hours per round, 5000 unset) and INGESTD_REFRESH_MAX_RANGES
    (TimescaleDB refresh calls per round, 20 unset) size the housekeeping, INGESTD_BUSY_RETURN_SHARE
    the returns' booking; a value out of bounds or not a number is refused with a message naming
    the variable."""
    env = {"INGESTD_DATABASE_URL": "postgresql://x@localhost/db"}
    if value is not None:
        env[name] = value
    if expected.replace(".", "", 1).isdigit():
        assert getattr(Settings.from_env(env), field) == float(expected)
    else:
        with pytest.raises(ConfigError, match=f"{name} {expected}"):
            Settings.from_env(env)


def test_settings_repr_hides_the_database_url() -> None:
    """The database URL (which may hold a password) never shows in the settings' repr."""
    settings = Settings.from_env({"INGESTD_DATABASE_URL": "postgresql://u:s3cret@localhost/db"})
    assert "s3cret" not in repr(settings)


def test_customer_lifecycle_through_the_cli(
    central_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """add prints a token once, list shows the customer, rotate prints a new token, revoke ends them."""
    monkeypatch.setenv("INGESTD_DATABASE_URL", central_db)
    assert main(["customers", "add", "DEV0001", "--name", "Dev"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("flt_") and len(token) >= 47

    assert main(["customers", "add", "DEV0001"]) == 1
    assert "already exists" in capsys.readouterr().err

    assert main(["customers", "list"]) == 0
    listing = capsys.readouterr().out
    assert "DEV0001" in listing and token not in listing

    assert main(["customers", "rotate-token", "DEV0001", "--grace", "30m"]) == 0
    new_token = capsys.readouterr().out.strip()
    assert new_token.startswith("flt_") and new_token != token

    assert main(["customers", "revoke", "DEV0001"]) == 0
    assert "revoked 2 token(s)" in capsys.readouterr().out

    assert main(["customers", "revoke", "NOPE"]) == 1
    assert "no customer" in capsys.readouterr().err


def test_invalid_customer_code_is_refused(
    central_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Customer codes are short identifiers; anything else is refused with a message."""
    monkeypatch.setenv("INGESTD_DATABASE_URL", central_db)
    assert main(["customers", "add", "has space"]) == 1
    assert "invalid customer code" in capsys.readouterr().err


def test_migrate_is_idempotent(
    central_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ingestd migrate` on a migrated database applies nothing and succeeds."""
    monkeypatch.setenv("INGESTD_DATABASE_URL", central_db)
    assert main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert "applied 0 migration(s)" in out
    assert "storage: " in out


def test_migrate_bootstraps_a_fresh_database(
    pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ingestd migrate` on an empty database applies every migration and bootstraps the storage."""
    dsn = pg_cluster.create_database("cli_fresh")
    monkeypatch.setenv("INGESTD_DATABASE_URL", dsn)
    monkeypatch.setenv("INGESTD_TIMESCALEDB", "off")
    assert main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert f"applied {len(migration_ids())} migration(s)" in out
    assert "storage: postgresql" in out
