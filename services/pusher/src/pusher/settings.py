"""pusher configuration, read once from the environment at start and passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib.util import find_spec
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

from fleetcore.protocol import INGEST_PATH
from fleetservice import EnvReader
from fleetservice.envconfig import Variable, record_variables
from fleetservice.logs import LOG_FORMATS, LOG_LEVELS
from fleetservice.redact import shown_url

from pusher.errors import ConfigError

__all__ = ["COLUMNAR_ENCODERS", "LEGACY_PREFIX", "WIRE_FORMATS", "Settings", "numpy_installed"]

# The pusher's variables were FLEET_* (a prefix shared with the test and dev tooling); they are
# PUSHER_* now, and the former names keep working with a warning.
LEGACY_PREFIX = ("FLEET_", "PUSHER_")

WIRE_FORMATS = ("auto", "json")
COLUMNAR_ENCODERS = ("auto", "stdlib", "numpy")
"""Who turns the customer database's records into a columnar body (`source.columns`)."""


def numpy_installed() -> bool:
    """numpy can be imported here (not on a gateway installed from the .deb)."""
    try:
        return find_spec("numpy") is not None
    except ValueError:  # a test blocked it: sys.modules["numpy"] = None
        return False


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _ingest_url(raw: str, allow_plaintext: bool) -> str:
    """Accept the server's base URL or the full endpoint; return the endpoint. Plain http:// is
    for loopback only (a proxy or tunnel on the gateway) unless PUSHER_ALLOW_PLAINTEXT=true: the
    token would travel in clear, and anyone on the path could forge a 200 that moves the cursor."""
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(f"PUSHER_INGEST_URL must be an http(s):// URL, got {shown_url(raw)!r}")
    if parts.scheme == "http" and not allow_plaintext and not _loopback(parts.hostname):
        raise ConfigError(
            f"PUSHER_INGEST_URL {shown_url(raw)} is plain http:// to a host that is not this "
            "machine: the token would travel in clear and anyone on the path could answer in "
            "ingestd's place (rows lost). Use https://, or set PUSHER_ALLOW_PLAINTEXT=true to "
            "accept that"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(INGEST_PATH):
        path += INGEST_PATH
    return f"{parts.scheme}://{parts.netloc}{path}"


def _token(env_: EnvReader) -> str:
    token = env_.optional("PUSHER_TOKEN", detail="secret; or PUSHER_TOKEN_FILE") or ""
    token_file = env_.optional("PUSHER_TOKEN_FILE", detail="a file holding the token") or ""
    if token and token_file:
        raise ConfigError("set PUSHER_TOKEN or PUSHER_TOKEN_FILE, not both")
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"PUSHER_TOKEN_FILE {token_file} cannot be read: {exc.strerror}"
            ) from None
        if not token:
            raise ConfigError(f"PUSHER_TOKEN_FILE {token_file} is empty")
    if not token:
        raise ConfigError("PUSHER_TOKEN (or PUSHER_TOKEN_FILE) is required but not set")
    if not token.isascii() or any(c.isspace() for c in token):
        raise ConfigError("the push token must be printable ASCII without spaces")
    return token


def _health_interval(env_: EnvReader) -> float:
    interval = env_.number("PUSHER_HEALTH_INTERVAL_S", 300.0, minimum=0.0)
    if interval > 86400:
        raise ConfigError("PUSHER_HEALTH_INTERVAL_S must be at most 86400 (0: no health reports)")
    return interval


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the pusher needs. The token and the database URL (which may carry a
    password) are kept out of `repr`, so a logged Settings never leaks them.

    `metrics_port` 0 keeps the metrics listener off. `backlog_count_interval_s` is the least
    time between two counts of the rows behind the cursor (the backlog_rows and lag metrics).
    `wire_format` "auto" sends measurements columnar once ingestd says it takes them, "json"
    never; `columnar_encoder` "auto" encodes with numpy where it is installed, with the
    standard library otherwise (the same bytes); `full_set_interval_s` is the longest time an
    unchanged full set goes unsent; `max_upload_bytes_per_s` 0 means no upload cap.
    `health_interval_s` is the longest the pusher goes without a request to ingestd: a health
    report (docs/PROTOCOL.md) is sent then, and whenever what it reports changed; 0 sends none.
    Reconciliation: a pass every `reconcile_interval_s` (0: never), over at most
    `reconcile_horizon_days` of rows, and `reconcile_settle_s` after the central database
    changed (docs/PROTOCOL.md)."""

    database_url: str = field(repr=False)
    enabled: bool = True
    ingest_url: str = ""
    token: str = field(default="", repr=False)
    push_interval_s: float = 60.0
    batch_size: int = 5000
    max_batches_per_tick: int = 3
    backoff_base_s: float = 60.0
    backoff_cap_s: float = 1800.0
    retry_after_jitter_s: float = 2.0
    request_timeout_s: float = 60.0
    shutdown_deadline_s: float = 10.0
    ca_bundle: Path | None = None
    gzip_level: int = 1
    blocking_txn_warn_s: float = 300.0
    log_format: str = "auto"
    log_level: str = "info"
    # Former names found in the environment: (old, new), for a warning once logging is up.
    deprecated: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    backlog_count_interval_s: float = 30.0
    db_statement_timeout_s: float = 60.0
    wire_format: str = "auto"
    columnar_encoder: str = "auto"
    full_set_interval_s: float = 3600.0
    max_upload_bytes_per_s: int = 0
    health_interval_s: float = 300.0
    allow_plaintext: bool = False
    reconcile_interval_s: float = 3600.0
    reconcile_horizon_days: int = 90
    reconcile_settle_s: float = 60.0

    @property
    def shown_ingest_url(self) -> str:
        """The ingest URL for logs and status lines: without userinfo."""
        return shown_url(self.ingest_url)

    @classmethod
    def variables(cls) -> list[Variable]:
        """Every variable `from_env` reads, with its default: what `--help` lists."""
        example = {"PUSHER_DATABASE_URL": "postgresql://", "PUSHER_PUSH_ENABLED": "true",
                   "PUSHER_INGEST_URL": "https://ingest", "PUSHER_TOKEN": "example"}  # fmt: skip
        return record_variables(cls.from_env, example)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read PUSHER_* variables (or their former FLEET_* names, noted in `deprecated`); raise
        ConfigError naming the first bad one.

        When PUSHER_PUSH_ENABLED is not true only the database URL is required, so
        `pusher migrate` and `pusher status` work on a stack that does not push yet.
        """
        env_ = EnvReader(env, ConfigError, legacy_prefix=LEGACY_PREFIX)
        log_format = env_.choice("PUSHER_LOG_FORMAT", "auto", LOG_FORMATS)
        database_url = env_.text("PUSHER_DATABASE_URL", None)
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("PUSHER_DATABASE_URL must be a postgresql:// URL")
        enabled = env_.flag("PUSHER_PUSH_ENABLED", False)
        ingest_url = ""
        token = ""
        allow_plaintext = env_.flag("PUSHER_ALLOW_PLAINTEXT", False)
        if enabled:
            ingest_url = _ingest_url(
                env_.text("PUSHER_INGEST_URL", None, detail="when PUSHER_PUSH_ENABLED=true"),
                allow_plaintext,
            )
            token = _token(env_)
        ca_raw = env_.optional("PUSHER_CA_BUNDLE", detail="system trust when unset") or ""
        ca_bundle = Path(ca_raw) if ca_raw else None
        if ca_bundle is not None and not ca_bundle.is_file():
            raise ConfigError(f"PUSHER_CA_BUNDLE {ca_raw} is not a readable file")
        base = env_.number("PUSHER_BACKOFF_BASE_S", 60.0, minimum=0.001)
        cap = env_.number("PUSHER_BACKOFF_CAP_S", 1800.0, minimum=0.001)
        if cap < base:
            raise ConfigError("PUSHER_BACKOFF_CAP_S must be >= PUSHER_BACKOFF_BASE_S")
        level = env_.integer("PUSHER_GZIP_LEVEL", 1, minimum=1, maximum=9)
        metrics_port = env_.integer("PUSHER_METRICS_PORT", 0, minimum=0, maximum=65535)
        encoder = env_.choice("PUSHER_COLUMNAR_ENCODER", "auto", COLUMNAR_ENCODERS)
        if encoder == "numpy" and not numpy_installed():
            raise ConfigError("PUSHER_COLUMNAR_ENCODER=numpy but numpy is not installed")
        settings = cls(
            database_url=database_url,
            enabled=enabled,
            ingest_url=ingest_url,
            allow_plaintext=allow_plaintext,
            token=token,
            push_interval_s=env_.number("PUSHER_PUSH_INTERVAL_S", 60.0, minimum=0.01),
            batch_size=env_.integer("PUSHER_BATCH_SIZE", 5000, minimum=1),
            max_batches_per_tick=env_.integer("PUSHER_MAX_BATCHES_PER_TICK", 3, minimum=1),
            backoff_base_s=base,
            backoff_cap_s=cap,
            retry_after_jitter_s=env_.number("PUSHER_RETRY_AFTER_JITTER_S", 2.0, minimum=0.0),
            request_timeout_s=env_.number("PUSHER_REQUEST_TIMEOUT_S", 60.0, minimum=0.1),
            shutdown_deadline_s=env_.number("PUSHER_SHUTDOWN_DEADLINE_S", 10.0, minimum=0.0),
            ca_bundle=ca_bundle,
            gzip_level=level,
            blocking_txn_warn_s=env_.number("PUSHER_BLOCKING_TXN_WARN_S", 300.0, minimum=0.0),
            log_format=log_format,
            log_level=env_.choice("PUSHER_LOG_LEVEL", "info", LOG_LEVELS),
            metrics_port=metrics_port,
            metrics_host=env_.text("PUSHER_METRICS_HOST", "127.0.0.1"),
            backlog_count_interval_s=env_.number(
                "PUSHER_BACKLOG_COUNT_INTERVAL_S", 30.0, minimum=0.0
            ),
            db_statement_timeout_s=env_.number("PUSHER_DB_STATEMENT_TIMEOUT_S", 60.0, minimum=0.1),
            wire_format=env_.choice("PUSHER_WIRE_FORMAT", "auto", WIRE_FORMATS),
            columnar_encoder=encoder,
            full_set_interval_s=env_.number("PUSHER_FULL_SET_INTERVAL_S", 3600.0, minimum=0.0),
            max_upload_bytes_per_s=env_.integer("PUSHER_MAX_UPLOAD_BYTES_PER_S", 0, minimum=0),
            health_interval_s=_health_interval(env_),
            reconcile_interval_s=env_.number("PUSHER_RECONCILE_INTERVAL_S", 3600.0, minimum=0.0),
            reconcile_horizon_days=env_.integer(
                "PUSHER_RECONCILE_HORIZON_DAYS", 90, minimum=1, maximum=3660
            ),
            reconcile_settle_s=env_.number("PUSHER_RECONCILE_SETTLE_S", 60.0, minimum=0.0),
        )
        # Read last: only now has every variable been looked up.
        return replace(settings, deprecated=tuple(dict.fromkeys(env_.deprecated)))
