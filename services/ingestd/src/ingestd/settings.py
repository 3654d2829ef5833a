"""ingestd configuration, read once from the environment at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from fleetservice import EnvReader
from fleetservice.envconfig import Variable, record_variables
from fleetservice.logs import LOG_FORMATS, LOG_LEVELS

from ingestd.admission import RETURN_SHARE
from ingestd.client_address import TrustedProxies, parse_trusted_proxies
from ingestd.fleetstate import HealthPolicy, version_key
from ingestd.memory import worst_case_bytes
from ingestd.storage.bootstrap import StoragePlan

__all__ = ["ConfigError", "Settings"]

_MiB = 1024 * 1024
ROLLUP_BATCH_MIN, ROLLUP_BATCH_MAX = 100, 1_000_000
"""INGESTD_ROLLUP_BATCH's bounds: with fewer device-hours per housekeeping round a fleet of a few
hundred devices is never caught up; with more one round holds the turn for minutes (~0.6 ms
of PostgreSQL per device-hour, docs/CAPACITY.md)."""


def _trusted_proxies(env_: EnvReader) -> TrustedProxies:
    """INGESTD_TRUSTED_PROXIES; the old INGESTD_TRUST_FORWARDED_FOR (which believed any client's
    X-Forwarded-For) is refused with the way out, never silently kept or dropped."""
    raw = env_.text("INGESTD_TRUSTED_PROXIES", "")
    try:
        trusted = parse_trusted_proxies(raw)
    except ValueError as exc:
        raise ConfigError(f"INGESTD_TRUSTED_PROXIES: {exc}") from None
    if env_.flag("INGESTD_TRUST_FORWARDED_FOR", False):
        raise ConfigError(
            "INGESTD_TRUST_FORWARDED_FOR is gone (it trusted X-Forwarded-For from anyone): set "
            "INGESTD_TRUSTED_PROXIES to your proxies' networks (CIDRs, comma-separated) instead"
        )
    return trusted


def _return_share(env_: EnvReader) -> float:
    """INGESTD_BUSY_RETURN_SHARE: of the measured capacity, the share a refused herd's returns are
    booked at (ingestd.admission.ReturnSchedule), in (0, 1]."""
    share = env_.number("INGESTD_BUSY_RETURN_SHARE", RETURN_SHARE, minimum=0.0)
    if not 0.0 < share <= 1.0:
        raise ConfigError(f"INGESTD_BUSY_RETURN_SHARE must be in (0, 1], got {share:g}")
    return share


def _health_policy(env_: EnvReader) -> HealthPolicy:
    """INGESTD_GATEWAY_* and INGESTD_METER_*: when a gateway or a meter is in which state."""
    min_version = env_.text("INGESTD_MIN_PUSHER_VERSION", "")
    if min_version and not version_key(min_version):
        raise ConfigError("INGESTD_MIN_PUSHER_VERSION must start with a release number (0.9.0)")
    return HealthPolicy(
        silent_factor=env_.number("INGESTD_GATEWAY_SILENT_FACTOR", 2.0, minimum=1.0),
        behind_s=env_.number("INGESTD_GATEWAY_BEHIND_S", 900.0, minimum=1.0),
        blocked_s=env_.number("INGESTD_GATEWAY_BLOCKED_S", 300.0, minimum=1.0),
        failing_after=env_.integer("INGESTD_GATEWAY_FAILING_AFTER", 3, minimum=1),
        clock_skew_s=env_.number("INGESTD_GATEWAY_CLOCK_SKEW_S", 120.0, minimum=1.0),
        disk_low_bytes=env_.integer("INGESTD_GATEWAY_DISK_LOW_MB", 1024, minimum=0) * _MiB,
        min_version=min_version,
        report_retention_days=env_.integer("INGESTD_GATEWAY_REPORT_RETENTION_DAYS", 14, minimum=1),
        state_interval_s=env_.number("INGESTD_FLEET_STATE_INTERVAL_S", 30.0, minimum=0.1),
        meter_silent_factor=env_.number("INGESTD_METER_SILENT_FACTOR", 3.0, minimum=1.0),
        meter_frozen_min_kw=env_.number("INGESTD_METER_FROZEN_MIN_KW", 1.0, minimum=0.0),
        meter_rated_kw=env_.number("INGESTD_METER_RATED_KW", 1000.0, minimum=0.001),
    )


class ConfigError(ValueError):
    """A variable is missing or malformed; the message names it."""


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
    retry_after_s: int = 10
    migrate_on_start: bool = False
    log_format: str = "auto"
    log_level: str = "info"
    storage: StoragePlan = field(default_factory=StoragePlan)
    housekeeping_interval_s: float = 10.0
    rollup_settle_s: float = 90.0
    rollup_batch: int = 5000
    refresh_max_ranges: int = 20
    admin_token: str | None = field(default=None, repr=False)
    max_hourly_range: timedelta = timedelta(days=93)
    max_daily_range_days: int = 366
    stale_device_after: timedelta = timedelta(minutes=15)
    max_inflight: int = 8
    inflight_wait_s: float = 1.0
    busy_retry_after_s: int = 2
    busy_retry_after_max_s: int = 900
    busy_return_share: float = RETURN_SHARE
    auth_failures_per_min: float = 30.0
    auth_failure_burst: int = 20
    trusted_proxies: TrustedProxies = ()
    token_cache_ttl_s: float = 60.0
    token_cache_ping_s: float = 5.0
    workers: int = 1
    replicas: int = 1
    audit_retention_days: int = 30
    rejected_retention_days: int = 90
    max_waiting: int = 32
    digest_timeout_s: float = 30.0
    health: HealthPolicy = field(default_factory=HealthPolicy)
    max_inflight_per_customer: int = 2
    admin_port: int | None = None
    memory_budget_bytes: int = 512 * _MiB
    decode_budget_s: float = 10.0

    @property
    def limit_shares(self) -> int:
        """Processes the per-customer rate limit and the failed-authentication budget are shared
        out over: each process enforces 1/shares of the configured totals."""
        return self.replicas * self.workers

    @property
    def effective_max_sample_age(self) -> timedelta:
        """Samples older than raw-data retention would be dropped at once: refuse them instead."""
        if self.storage.retention is None:
            return self.max_sample_age
        return min(self.max_sample_age, self.storage.retention - timedelta(days=7))

    @classmethod
    def variables(cls) -> list[Variable]:
        """Every variable `from_env` reads, with its default: what `--help` lists."""
        return record_variables(cls.from_env, {"INGESTD_DATABASE_URL": "postgresql://"})

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        env_ = EnvReader(env, ConfigError)
        log_format = env_.choice("INGESTD_LOG_FORMAT", "auto", LOG_FORMATS)
        database_url = env_.text("INGESTD_DATABASE_URL", None)
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("INGESTD_DATABASE_URL must be a postgresql:// URL")
        pool_min = env_.integer("INGESTD_POOL_MIN_SIZE", 1, minimum=0)
        pool_max = env_.integer("INGESTD_POOL_MAX_SIZE", 4, minimum=1)
        if pool_max < pool_min:
            raise ConfigError("INGESTD_POOL_MAX_SIZE must be >= INGESTD_POOL_MIN_SIZE")
        timescaledb = env_.choice("INGESTD_TIMESCALEDB", "auto", ("auto", "on", "off"))
        retention_days = env_.integer("INGESTD_RETENTION_DAYS", 0, minimum=0)
        start_offset_days = env_.integer("INGESTD_REFRESH_START_OFFSET_DAYS", 30, minimum=1)
        if retention_days and retention_days < start_offset_days + 14:
            raise ConfigError(
                "INGESTD_RETENTION_DAYS must be at least INGESTD_REFRESH_START_OFFSET_DAYS + 14 "
                "(raw rows must outlive the aggregate's refresh window), or 0 to keep everything"
            )
        for replaced in ("INGESTD_CHUNK_INTERVAL_DAYS", "INGESTD_COMPRESS_AFTER_DAYS"):
            if replaced in env:
                raise ConfigError(
                    f"{replaced} is replaced by {replaced.replace('_DAYS', '_HOURS')} (hours: rows "
                    "are compressed within a day now; an existing hypertable keeps its chunks)"
                )
        storage = StoragePlan(
            timescaledb=timescaledb,
            chunk_interval=timedelta(
                hours=env_.integer("INGESTD_CHUNK_INTERVAL_HOURS", 16, minimum=1)
            ),
            compress_after=timedelta(
                hours=env_.integer("INGESTD_COMPRESS_AFTER_HOURS", 1, minimum=0)
            ),
            refresh_start_offset=timedelta(days=start_offset_days),
            refresh_end_offset=timedelta(
                seconds=env_.integer("INGESTD_REFRESH_END_OFFSET_S", 3600, minimum=0)
            ),
            refresh_schedule=timedelta(
                seconds=env_.integer("INGESTD_REFRESH_SCHEDULE_S", 3600, minimum=60)
            ),
            partitions_ahead=env_.integer("INGESTD_PARTITIONS_AHEAD", 4, minimum=0),
            retention=timedelta(days=retention_days) if retention_days else None,
        )
        admin_token = env_.optional("INGESTD_ADMIN_TOKEN", detail="at least 32 characters")
        if admin_token is not None and len(admin_token) < 32:
            raise ConfigError("INGESTD_ADMIN_TOKEN must be at least 32 characters")
        max_inflight = env_.integer("INGESTD_MAX_INFLIGHT", 2 * pool_max, minimum=1)
        busy_retry_after = env_.integer("INGESTD_BUSY_RETRY_AFTER_S", 2, minimum=1)
        max_wire = env_.integer("INGESTD_MAX_WIRE_BYTES", 16 * _MiB, minimum=1024)
        max_body = env_.integer("INGESTD_MAX_BODY_BYTES", 64 * _MiB, minimum=1024)
        budget = env_.integer("INGESTD_MEMORY_BUDGET_MB", 512, minimum=16) * _MiB
        worst = worst_case_bytes(max_wire, max_body)
        if budget < worst:
            raise ConfigError(
                f"INGESTD_MEMORY_BUDGET_MB must hold one body at every limit: "
                f"{-(-worst // _MiB)} MiB with INGESTD_MAX_WIRE_BYTES={max_wire} and "
                f"INGESTD_MAX_BODY_BYTES={max_body} (raise it or lower those)"
            )
        port = env_.integer("INGESTD_PORT", 8080, minimum=1, maximum=65535)
        admin_port = env_.integer("INGESTD_ADMIN_PORT", 0, minimum=0, maximum=65535) or None
        if admin_port == port:
            raise ConfigError(
                "INGESTD_ADMIN_PORT must differ from INGESTD_PORT (or be 0: one port)"
            )
        return cls(
            admin_port=admin_port,
            max_inflight_per_customer=env_.integer(
                "INGESTD_MAX_INFLIGHT_PER_CUSTOMER", 2, minimum=1
            ),
            memory_budget_bytes=budget,
            decode_budget_s=env_.number("INGESTD_DECODE_BUDGET_S", 10.0, minimum=0.1),
            max_inflight=max_inflight,
            inflight_wait_s=env_.number("INGESTD_INFLIGHT_WAIT_S", 1.0, minimum=0.0),
            busy_retry_after_s=busy_retry_after,
            busy_retry_after_max_s=env_.integer(
                "INGESTD_BUSY_RETRY_AFTER_MAX_S",
                max(900, busy_retry_after),
                minimum=busy_retry_after,
            ),
            busy_return_share=_return_share(env_),
            auth_failures_per_min=env_.number("INGESTD_AUTH_FAILURES_PER_MIN", 30.0, minimum=0.01),
            auth_failure_burst=env_.integer("INGESTD_AUTH_FAILURE_BURST", 20, minimum=1),
            trusted_proxies=_trusted_proxies(env_),
            token_cache_ttl_s=env_.number("INGESTD_TOKEN_CACHE_TTL_S", 300.0, minimum=0.0),
            token_cache_ping_s=env_.number("INGESTD_TOKEN_CACHE_PING_S", 5.0, minimum=0.1),
            workers=env_.integer("INGESTD_WORKERS", 1, minimum=1),
            replicas=env_.integer("INGESTD_REPLICAS", 1, minimum=1),
            audit_retention_days=env_.integer("INGESTD_AUDIT_RETENTION_DAYS", 30, minimum=1),
            rejected_retention_days=env_.integer("INGESTD_REJECTED_RETENTION_DAYS", 90, minimum=1),
            max_waiting=env_.integer("INGESTD_MAX_WAITING", 4 * max_inflight, minimum=0),
            digest_timeout_s=env_.number("INGESTD_DIGEST_TIMEOUT_S", 30.0, minimum=0.1),
            health=_health_policy(env_),
            storage=storage,
            admin_token=admin_token,
            housekeeping_interval_s=env_.number(
                "INGESTD_HOUSEKEEPING_INTERVAL_S", 10.0, minimum=0.1
            ),
            rollup_settle_s=env_.number("INGESTD_ROLLUP_SETTLE_S", 90.0, minimum=0.0),
            rollup_batch=env_.integer(
                "INGESTD_ROLLUP_BATCH", 5000, minimum=ROLLUP_BATCH_MIN, maximum=ROLLUP_BATCH_MAX
            ),
            refresh_max_ranges=env_.integer(
                "INGESTD_REFRESH_MAX_RANGES", 20, minimum=1, maximum=10_000
            ),
            max_hourly_range=timedelta(
                days=env_.integer("INGESTD_MAX_HOURLY_RANGE_DAYS", 93, minimum=1)
            ),
            max_daily_range_days=env_.integer("INGESTD_MAX_DAILY_RANGE_DAYS", 366, minimum=1),
            stale_device_after=timedelta(
                minutes=env_.integer("INGESTD_STALE_DEVICE_MINUTES", 15, minimum=1)
            ),
            database_url=database_url,
            host=env_.text("INGESTD_HOST", "127.0.0.1"),
            port=port,
            max_wire_bytes=max_wire,
            max_body_bytes=max_body,
            body_timeout_s=env_.number("INGESTD_BODY_TIMEOUT_S", 60.0, minimum=0.1),
            max_sample_age=timedelta(
                days=env_.integer("INGESTD_MAX_SAMPLE_AGE_DAYS", 3660, minimum=1)
            ),
            max_sample_ahead=timedelta(
                seconds=env_.integer("INGESTD_MAX_SAMPLE_AHEAD_S", 86400, minimum=0)
            ),
            rate_limit_per_s=env_.number("INGESTD_RATE_LIMIT_PER_S", 50.0, minimum=0.001),
            rate_limit_burst=env_.integer("INGESTD_RATE_LIMIT_BURST", 100, minimum=1),
            pool_min_size=pool_min,
            pool_max_size=pool_max,
            pool_timeout_s=env_.number("INGESTD_POOL_TIMEOUT_S", 5.0, minimum=0.01),
            connect_timeout_s=env_.number("INGESTD_CONNECT_TIMEOUT_S", 10.0, minimum=0.1),
            retry_after_s=env_.integer("INGESTD_RETRY_AFTER_S", 10, minimum=1),
            migrate_on_start=env_.flag("INGESTD_MIGRATE_ON_START", False),
            log_format=log_format,
            log_level=env_.choice("INGESTD_LOG_LEVEL", "info", LOG_LEVELS),
        )
