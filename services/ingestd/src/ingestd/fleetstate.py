"""What each gateway and each meter is doing, decided in one place (docs/OPERATIONS.md, "Fleet").

A gateway's states come from its latest health report (`fleet.gateways`) and the time now; a
meter's from its samples (`ingestd.storage.meters`) and whether its customer's gateways report.
The read API (`GET /api/fleet/gateways`), the housekeeping that stores the states for the
dashboard, and the Prometheus figures all call these functions, so they never disagree.

Gateway states (several can hold at once; `ok` when none does):

    silent        no request (report or batch) for INGESTD_GATEWAY_SILENT_FACTOR x the heartbeat
                  it announced
    behind        measurements lag or oldest unshipped row older than INGESTD_GATEWAY_BEHIND_S
    blocked       a transaction on the gateway's database holds the cursor > INGESTD_GATEWAY_BLOCKED_S
    failing       INGESTD_GATEWAY_FAILING_AFTER consecutive failed batches of some resource
    skewed_clock  clock offset beyond INGESTD_GATEWAY_CLOCK_SKEW_S (or flagged implausible)
    quarantine    rows quarantined on the gateway (refused even alone, kept locally)
    disk_low      free disk under the gateway's database below INGESTD_GATEWAY_DISK_LOW_MB
    old_version   pusher older than INGESTD_MIN_PUSHER_VERSION
    implausible   the report had fields flagged implausible (stored, shown, not used)
    retired       its token was revoked or expired (not counted in the fleet's figures)

Meter states (one each): `silent` (no sample for INGESTD_METER_SILENT_FACTOR x its usual interval
while a gateway of its customer reports), `implausible` (a register step larger than
INGESTD_METER_RATED_KW x the time it took, in the last day), `frozen` (an energy register flat for
an hour while |p_total| stayed above INGESTD_METER_FROZEN_MIN_KW), `unknown` (no gateway of its
customer reports: the gateway is the problem, not the meter), else `ok`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "GATEWAY_STATES",
    "METER_STATES",
    "HealthPolicy",
    "gateway_states",
    "meter_state",
    "version_key",
]

GATEWAY_STATES: tuple[str, ...] = (
    "ok", "silent", "behind", "blocked", "failing", "skewed_clock", "quarantine", "disk_low",
    "old_version", "implausible", "retired",
)  # fmt: skip
METER_STATES: tuple[str, ...] = ("ok", "silent", "frozen", "implausible", "unknown")

_MAX_HEARTBEAT_S = 86400.0


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """The centre's thresholds for gateway and meter states (INGESTD_GATEWAY_*, INGESTD_METER_*)."""

    silent_factor: float = 2.0
    behind_s: float = 900.0
    blocked_s: float = 300.0
    failing_after: int = 3
    clock_skew_s: float = 120.0
    disk_low_bytes: int = 1024 * 1024 * 1024
    min_version: str = ""
    report_retention_days: int = 14
    state_interval_s: float = 30.0
    meter_silent_factor: float = 3.0
    meter_frozen_min_kw: float = 1.0
    meter_rated_kw: float = 1000.0


def version_key(version: str) -> tuple[int, ...]:
    """The release numbers of a version (`0.9.1rc1` → (0, 9, 1)); () when it has none."""
    found = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in found.group(0).split(".")) if found else ()


def silent_after_s(heartbeat_s: float | None, policy: HealthPolicy) -> float:
    heartbeat = min(max(heartbeat_s or _MAX_HEARTBEAT_S, 1.0), _MAX_HEARTBEAT_S)
    return policy.silent_factor * heartbeat


def gateway_states(gateway: Mapping[str, Any], now: datetime, policy: HealthPolicy) -> list[str]:
    """The states of one `fleet.gateways` row (with `retired` from its token), in GATEWAY_STATES order."""
    if gateway["retired"]:
        return ["retired"]
    found: set[str] = set()
    flagged = set(gateway["implausible"] or ())
    last = max(gateway["last_report_at"], gateway["last_contact_at"])
    silence = (now - last).total_seconds()
    if silence > silent_after_s(gateway["heartbeat_s"], policy):
        found.add("silent")
    if max(gateway["lag_s"] or 0.0, gateway["oldest_unshipped_age_s"] or 0.0) > policy.behind_s:
        found.add("behind")
    if (gateway["blocking_age_s"] or 0.0) > policy.blocked_s:
        found.add("blocked")
    if gateway["failures"] >= policy.failing_after:
        found.add("failing")
    offset = gateway["clock_offset_s"]
    if "clock_offset_s" in flagged or (offset is not None and abs(offset) > policy.clock_skew_s):
        found.add("skewed_clock")
    if gateway["quarantined_rows"] > 0:
        found.add("quarantine")
    free = gateway["disk_free_bytes"]
    if free is not None and free < policy.disk_low_bytes:
        found.add("disk_low")
    if policy.min_version and version_key(gateway["version"]) < version_key(policy.min_version):
        found.add("old_version")
    if flagged:
        found.add("implausible")
    return [s for s in GATEWAY_STATES if s in found] or ["ok"]


def meter_state(
    meter: Mapping[str, Any], now: datetime, gateway_reports: bool, policy: HealthPolicy
) -> str:
    """The state of one device row of `storage.meters.meter_rows`; `gateway_reports` says whether
    a gateway of its customer reports (is not silent)."""
    if not gateway_reports:
        return "unknown"
    last, usual = meter["last_sample_at"], meter["usual_interval_s"]
    if last is None:
        return "silent"
    if usual and (now - last).total_seconds() > policy.meter_silent_factor * usual:
        return "silent"
    if meter["implausible"]:
        return "implausible"
    if meter["frozen"]:
        return "frozen"
    return "ok"
