"""The gateway health report (docs/PROTOCOL.md, "Health reports"): its struct, limits and checks.

A pusher sends one to `POST /api/fleet/health` when ingestd advertised support (the
`X-Health-Report` header on its answers), at most once per push interval when something that
matters changed, hourly otherwise, and as a heartbeat when no other request went for a while. ingestd keeps the latest per
token (one token per gateway) and a bounded history. This module is the one definition both
services and the OpenAPI document use.

On the wire the report is a small JSON object with short keys (a report sent every few minutes
should cost well under 2 % of a gateway's upstream bytes); zero and absent values are left out
(`omit_defaults`). Two levels of checking:

- `decode_report` refuses what is not a report (not JSON, a wrong type, a negative count, a
  string over its limit): `ReportFormatError`, which ingestd answers 400 `invalid_report` naming
  the field. A body over `MAX_REPORT_BYTES` is refused before decoding (413).
- `implausible_fields` names the fields of a well-formed report whose values cannot be true (a
  clock offset of years, a lag longer than the century, a start time in the future): the report is
  stored with those fields flagged, never refused — it is still the gateway's latest word.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec

from fleetcore.error_codes import ErrorCode

__all__ = [
    "HEALTH_MEDIA_TYPE",
    "MAX_REPORT_BYTES",
    "PLAUSIBLE",
    "HealthReport",
    "ReportFormatError",
    "ResourceHealth",
    "decode_report",
    "encode_report",
    "implausible_fields",
    "report_fields",
]

HEALTH_MEDIA_TYPE = "application/json"
MAX_REPORT_BYTES = 2048
"""The most a report may take, as sent and decompressed; a real one is 100-250 bytes."""

_MAX_INT = 2**63 - 1
Count = Annotated[int, msgspec.Meta(ge=0, le=_MAX_INT)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e15)]
Offset = Annotated[float, msgspec.Meta(ge=-1e15, le=1e15)]
UnixTime = Annotated[int, msgspec.Meta(ge=0, le=253402300799)]  # up to 9999-12-31
Version = Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=r"^[0-9A-Za-z.+_-]+$")]
Word = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$")]
Host = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z.:_-]+$")]


class ResourceHealth(msgspec.Struct, frozen=True, omit_defaults=True):
    """One resource (sites, devices or measurements) as the pusher sees it."""

    backlog_rows: Count = msgspec.field(default=0, name="b")
    lag_s: Seconds = msgspec.field(default=0.0, name="l")
    oldest_unshipped_age_s: Seconds = msgspec.field(default=0.0, name="a")
    consecutive_failures: Count = msgspec.field(default=0, name="f")
    last_error: Word | None = msgspec.field(default=None, name="e")
    """The last failure's HTTP status, or what failed below HTTP (timeout, connection, tls)."""


class HealthReport(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a pusher tells the centre about itself; times in seconds, sizes in bytes."""

    version: Version = msgspec.field(name="v")
    wire_format: Word = msgspec.field(name="w")
    started_at: UnixTime = msgspec.field(name="st")
    push_interval_s: Seconds = msgspec.field(name="pi")
    heartbeat_s: Seconds = msgspec.field(name="hb")
    measurements: ResourceHealth | None = msgspec.field(default=None, name="m")
    sites: ResourceHealth | None = msgspec.field(default=None, name="s")
    devices: ResourceHealth | None = msgspec.field(default=None, name="d")
    quarantined_rows: Count = msgspec.field(default=0, name="q")
    blocking_age_s: Seconds = msgspec.field(default=0.0, name="bx")
    db_bytes: Count | None = msgspec.field(default=None, name="db")
    disk_free_bytes: Count | None = msgspec.field(default=None, name="df")
    clock_offset_s: Offset | None = msgspec.field(default=None, name="co")
    """Server clock minus gateway clock, from the `Date` of ingestd's answers (positive: the
    gateway is behind)."""
    upload_cap: Count = msgspec.field(default=0, name="cap")
    sent_bytes: Count = msgspec.field(default=0, name="tx")
    host: Host | None = msgspec.field(default=None, name="h")

    def resources(self) -> dict[str, ResourceHealth]:
        found = {"sites": self.sites, "devices": self.devices, "measurements": self.measurements}
        return {name: r for name, r in found.items() if r is not None}


class PlausibleLimits(msgspec.Struct, frozen=True):
    """Beyond these a value is flagged implausible (stored as flagged, not refused)."""

    max_clock_offset_s: float = 365 * 86400.0
    max_age_s: float = 20 * 365 * 86400.0
    max_interval_s: float = 86400.0
    max_bytes: int = 2**50  # a PiB of database or free disk on a gateway
    earliest_start: int = 946684800  # 2000-01-01


PLAUSIBLE = PlausibleLimits()


class ReportFormatError(ValueError):
    """The body is not a health report; `detail` names what is wrong (and where)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.code = ErrorCode.INVALID_REPORT
        self.detail = detail


_DECODER = msgspec.json.Decoder(HealthReport)
_ENCODER = msgspec.json.Encoder()


def encode_report(report: HealthReport) -> bytes:
    return _ENCODER.encode(report)


def decode_report(body: bytes | bytearray) -> HealthReport:
    if len(body) > MAX_REPORT_BYTES:
        raise ReportFormatError(f"report is over {MAX_REPORT_BYTES} bytes")
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise ReportFormatError(f"invalid report: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ReportFormatError(f"report is not valid JSON: {exc}") from None
    except (UnicodeDecodeError, RecursionError):
        raise ReportFormatError("report is not valid UTF-8 JSON") from None


def implausible_fields(
    report: HealthReport, received_at: datetime, limits: PlausibleLimits = PLAUSIBLE
) -> list[str]:
    """Names (as in `report_fields`) of the values that cannot be true, in field order."""
    flagged: list[str] = []
    offset = report.clock_offset_s or 0.0
    if abs(offset) > limits.max_clock_offset_s:
        flagged.append("clock_offset_s")
        offset = 0.0
    # The gateway's clock plus its offset is the server's: a start after the report is impossible.
    started = report.started_at + offset
    if report.started_at < limits.earliest_start or started > received_at.timestamp() + 86400:
        flagged.append("started_at")
    for name in ("push_interval_s", "heartbeat_s"):
        if getattr(report, name) > limits.max_interval_s:
            flagged.append(name)
    for resource, health in report.resources().items():
        for name in ("lag_s", "oldest_unshipped_age_s"):
            if getattr(health, name) > limits.max_age_s:
                flagged.append(f"{resource}.{name}")
    if report.blocking_age_s > limits.max_age_s:
        flagged.append("blocking_age_s")
    for name in ("db_bytes", "disk_free_bytes"):
        value = getattr(report, name)
        if value is not None and value > limits.max_bytes:
            flagged.append(name)
    return flagged


def report_fields(report: HealthReport) -> dict[str, object]:
    """The report with readable names (what the read API shows and the history keeps)."""
    out: dict[str, object] = {
        name: getattr(report, name)
        for name in HealthReport.__struct_fields__
        if name not in ("sites", "devices", "measurements")
    }
    out["started_at"] = datetime.fromtimestamp(report.started_at, UTC).isoformat()
    out["resources"] = {
        name: {f: getattr(health, f) for f in ResourceHealth.__struct_fields__}
        for name, health in report.resources().items()
    }
    return out
