"""ingestd configuration, read once from the environment at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from ingestd.storage.bootstrap import StoragePlan

__all__ = ["ConfigError", "Settings"]

_MiB = 1024 * 1024


class ConfigError(ValueError):
    """A variable is missing or malformed; the message names it."""


def _get(env: Mapping[str, str], name: str, default: str | None) -> str:
    value = env.get(name)
    if value is None or value.strip() == "":
        if default is None:
            raise ConfigError(f"{name} is required but not set")
        return default
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = _get(env, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {raw}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, "true" if default else "false").lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ingestd needs to run. Secrets are kept out of `repr` so they never reach a log."""

    database_url: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    max_wire_bytes: int = 16 * _MiB
    max_body_bytes: int = 64 * _MiB
    body_timeout_s: float = 60.0
    max_sample_age: timedelta = timedelta(days=3660)
    max_sample_ahead: timedelta = timedelta(days=1)
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 100
    pool_min_size: int = 1
    pool_max_size: int = 4
    pool_timeout_s: float = 5.0
    connect_timeout_s: float = 10.0
    retry_after_s: int = 30
    migrate_on_start: bool = False
    log_format: str = "auto"
    storage: StoragePlan = field(default_factory=StoragePlan)
    housekeeping_interval_s: float = 10.0
    rollup_settle_s: float = 5.0
    rollup_batch: int = 5000
    refresh_max_ranges: int = 20
    admin_token: str | None = field(default=None, repr=False)
    max_hourly_range: timedelta = timedelta(days=93)
    auth_failures_per_min: float = 30.0
    auth_failure_burst: int = 20
    trust_forwarded_for: bool = False

    @property
    def effective_max_sample_age(self) -> timedelta:
        """Samples older than raw-data retention would be dropped at once: refuse them instead."""
        if self.storage.retention is None:
            return self.max_sample_age
        return min(self.max_sample_age, self.storage.retention - timedelta(days=7))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        log_format = _get(env, "INGESTD_LOG_FORMAT", "auto")
        if log_format not in {"auto", "json", "console"}:
            raise ConfigError(
                f"INGESTD_LOG_FORMAT must be auto, json or console, got {log_format!r}"
            )
        database_url = _get(env, "INGESTD_DATABASE_URL", None)
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("INGESTD_DATABASE_URL must be a postgresql:// URL")
        pool_min = _int(env, "INGESTD_POOL_MIN_SIZE", 1, minimum=0)
        pool_max = _int(env, "INGESTD_POOL_MAX_SIZE", 4, minimum=1)
        if pool_max < pool_min:
            raise ConfigError("INGESTD_POOL_MAX_SIZE must be >= INGESTD_POOL_MIN_SIZE")
        timescaledb = _get(env, "INGESTD_TIMESCALEDB", "auto").lower()
        if timescaledb not in {"auto", "on", "off"}:
            raise ConfigError(f"INGESTD_TIMESCALEDB must be auto, on or off, got {timescaledb!r}")
        retention_days = _int(env, "INGESTD_RETENTION_DAYS", 0, minimum=0)
        start_offset_days = _int(env, "INGESTD_REFRESH_START_OFFSET_DAYS", 30, minimum=1)
        if retention_days and retention_days < start_offset_days + 14:
            raise ConfigError(
                "INGESTD_RETENTION_DAYS must be at least INGESTD_REFRESH_START_OFFSET_DAYS + 14 "
                "(raw rows must outlive the aggregate's refresh window), or 0 to keep everything"
            )
        storage = StoragePlan(
            timescaledb=timescaledb,
            chunk_interval=timedelta(days=_int(env, "INGESTD_CHUNK_INTERVAL_DAYS", 7, minimum=1)),
            compress_after=timedelta(days=_int(env, "INGESTD_COMPRESS_AFTER_DAYS", 7, minimum=1)),
            refresh_start_offset=timedelta(days=start_offset_days),
            refresh_end_offset=timedelta(
                seconds=_int(env, "INGESTD_REFRESH_END_OFFSET_S", 3600, minimum=0)
            ),
            refresh_schedule=timedelta(
                seconds=_int(env, "INGESTD_REFRESH_SCHEDULE_S", 3600, minimum=60)
            ),
            partitions_ahead=_int(env, "INGESTD_PARTITIONS_AHEAD", 4, minimum=0),
            retention=timedelta(days=retention_days) if retention_days else None,
        )
        admin_token = env.get("INGESTD_ADMIN_TOKEN", "").strip() or None
        if admin_token is not None and len(admin_token) < 32:
            raise ConfigError("INGESTD_ADMIN_TOKEN must be at least 32 characters")
        return cls(
            auth_failures_per_min=_float(env, "INGESTD_AUTH_FAILURES_PER_MIN", 30.0, minimum=0.01),
            auth_failure_burst=_int(env, "INGESTD_AUTH_FAILURE_BURST", 20, minimum=1),
            trust_forwarded_for=_bool(env, "INGESTD_TRUST_FORWARDED_FOR", False),
            storage=storage,
            admin_token=admin_token,
            housekeeping_interval_s=_float(
                env, "INGESTD_HOUSEKEEPING_INTERVAL_S", 10.0, minimum=0.1
            ),
            rollup_settle_s=_float(env, "INGESTD_ROLLUP_SETTLE_S", 5.0, minimum=0.0),
            max_hourly_range=timedelta(
                days=_int(env, "INGESTD_MAX_HOURLY_RANGE_DAYS", 93, minimum=1)
            ),
            database_url=database_url,
            host=_get(env, "INGESTD_HOST", "127.0.0.1"),
            port=_int(env, "INGESTD_PORT", 8080, minimum=0),
            max_wire_bytes=_int(env, "INGESTD_MAX_WIRE_BYTES", 16 * _MiB, minimum=1024),
            max_body_bytes=_int(env, "INGESTD_MAX_BODY_BYTES", 64 * _MiB, minimum=1024),
            body_timeout_s=_float(env, "INGESTD_BODY_TIMEOUT_S", 60.0, minimum=0.1),
            max_sample_age=timedelta(
                days=_int(env, "INGESTD_MAX_SAMPLE_AGE_DAYS", 3660, minimum=1)
            ),
            max_sample_ahead=timedelta(
                seconds=_int(env, "INGESTD_MAX_SAMPLE_AHEAD_S", 86400, minimum=0)
            ),
            rate_limit_per_s=_float(env, "INGESTD_RATE_LIMIT_PER_S", 50.0, minimum=0.001),
            rate_limit_burst=_int(env, "INGESTD_RATE_LIMIT_BURST", 100, minimum=1),
            pool_min_size=pool_min,
            pool_max_size=pool_max,
            pool_timeout_s=_float(env, "INGESTD_POOL_TIMEOUT_S", 5.0, minimum=0.01),
            connect_timeout_s=_float(env, "INGESTD_CONNECT_TIMEOUT_S", 10.0, minimum=0.1),
            retry_after_s=_int(env, "INGESTD_RETRY_AFTER_S", 30, minimum=1),
            migrate_on_start=_bool(env, "INGESTD_MIGRATE_ON_START", False),
            log_format=log_format,
        )
