"""Gateway health reports: the latest per token, a bounded history, and the stored states.

Every request with a token is a contact (`record_contacts`, flushed in bulk from memory by the
fleet-state task); `store_report` is one statement (upsert of the latest, history row only when the previous report
of that gateway is at least `HISTORY_SPACING` old, so a gateway sending too often cannot grow the
history faster than that); `delete_old_reports` is the history's retention, batched like the
audit trail's (`storage.retention`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fleetcore import HealthReport, report_fields
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ingestd.storage.locks import FLEET_STATE_LOCK, transaction_turn

__all__ = [
    "HISTORY_SPACING",
    "delete_old_reports",
    "fleet_totals",
    "gateway_history",
    "gateway_rows",
    "record_contacts",
    "store_report",
    "take_state_turn",
    "write_gateway_states",
]

HISTORY_SPACING = timedelta(seconds=10)

_COLUMNS = (
    "version", "wire_format", "started_at", "push_interval_s", "heartbeat_s", "backlog_rows",
    "lag_s", "oldest_unshipped_age_s", "failures", "last_error", "quarantined_rows",
    "blocking_age_s", "db_bytes", "disk_free_bytes", "clock_offset_s", "upload_cap",
    "sent_bytes", "host", "implausible", "report",
)  # fmt: skip

STORE_REPORT = f"""
WITH prev AS (
    SELECT last_report_at FROM fleet.gateways WHERE token_hash = %(token)s
), latest AS (
    INSERT INTO fleet.gateways (token_hash, customer_id, {", ".join(_COLUMNS)})
    VALUES (%(token)s, %(customer)s, {", ".join(f"%({c})s" for c in _COLUMNS)})
    ON CONFLICT (token_hash) DO UPDATE SET
        last_report_at = now(), last_contact_at = now(), reports = fleet.gateways.reports + 1,
        {", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS)}
)
INSERT INTO fleet.gateway_reports (token_hash, customer_id, report, implausible)
SELECT %(token)s, %(customer)s, %(report)s, %(implausible)s
WHERE NOT EXISTS (SELECT 1 FROM prev WHERE last_report_at > now() - %(spacing)s::interval)
ON CONFLICT DO NOTHING
"""

GATEWAYS = """
SELECT c.code AS customer, t.hint AS token_hint, g.*,
       (t.revoked_at IS NOT NULL OR t.expires_at <= now()) AS retired
FROM fleet.gateways g
JOIN fleet.customers c ON c.id = g.customer_id
JOIN fleet.customer_tokens t ON t.token_hash = g.token_hash
WHERE (%(customer)s::text IS NULL OR c.code = %(customer)s)
ORDER BY c.code, g.first_report_at, t.hint
"""
HISTORY = """
SELECT received_at, report, implausible FROM fleet.gateway_reports
WHERE token_hash = %s ORDER BY received_at DESC LIMIT %s
"""
WRITE_STATES = """
UPDATE fleet.gateways g SET states = v.states::text[], states_at = now()
FROM unnest(%s::bytea[], %s::text[]) AS v(token_hash, states)
WHERE g.token_hash = v.token_hash
"""
CONTACTS = """
UPDATE fleet.gateways g SET last_contact_at = greatest(g.last_contact_at, v.at)
FROM unnest(%s::bytea[], %s::timestamptz[]) AS v(token_hash, at)
WHERE g.token_hash = v.token_hash
"""
DELETE_OLD = """DELETE FROM fleet.gateway_reports WHERE (token_hash, received_at) IN (
    SELECT token_hash, received_at FROM fleet.gateway_reports WHERE received_at < %s LIMIT %s)"""


def _values(report: HealthReport, implausible: Sequence[str]) -> dict[str, Any]:
    """The columns of the latest row; flagged fields are stored as null (shown as flagged)."""
    fields = report_fields(report)
    flagged = set(implausible)
    measurements = report.measurements
    resources = report.resources().values()
    values: dict[str, Any] = {
        "version": report.version,
        "wire_format": report.wire_format,
        "started_at": None
        if "started_at" in flagged
        else datetime.fromtimestamp(report.started_at, UTC),
        "push_interval_s": report.push_interval_s,
        "heartbeat_s": report.heartbeat_s,
        "backlog_rows": measurements.backlog_rows if measurements else 0,
        "lag_s": measurements.lag_s if measurements else 0.0,
        "oldest_unshipped_age_s": measurements.oldest_unshipped_age_s if measurements else 0.0,
        "failures": max((r.consecutive_failures for r in resources), default=0),
        "last_error": next((r.last_error for r in resources if r.last_error), None),
        "quarantined_rows": report.quarantined_rows,
        "blocking_age_s": report.blocking_age_s,
        "db_bytes": report.db_bytes,
        "disk_free_bytes": report.disk_free_bytes,
        "clock_offset_s": report.clock_offset_s,
        "upload_cap": report.upload_cap,
        "sent_bytes": report.sent_bytes,
        "host": report.host,
        "implausible": list(implausible),
        "report": Jsonb(fields),
    }
    for name in flagged:
        if "." in name:  # measurements.lag_s: the figure, not the resource, is unusable
            name = name.split(".", 1)[1]
        if name in values and name not in ("implausible", "version", "wire_format"):
            values[name] = None if name not in ("backlog_rows", "failures") else 0
    return values


async def store_report(
    conn: AsyncConnection[Any],
    token_hash: bytes,
    customer_id: int,
    report: HealthReport,
    implausible: Sequence[str],
) -> None:
    """Make `report` the gateway's latest, and add it to the history (see `HISTORY_SPACING`)."""
    params = _values(report, implausible)
    params.update(token=token_hash, customer=customer_id, spacing=HISTORY_SPACING)
    await conn.execute(STORE_REPORT, params)


async def gateway_rows(
    conn: AsyncConnection[Any], customer: str | None = None
) -> list[dict[str, Any]]:
    """Every gateway (of `customer`, a code, when given) with its customer code, token hint and
    `retired` (token revoked or expired); by customer, then first report."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(GATEWAYS, {"customer": customer})
        return list(await cur.fetchall())


async def gateway_history(
    conn: AsyncConnection[Any], token_hash: bytes, limit: int
) -> list[tuple[Any, ...]]:
    """received_at, report, implausible of the gateway's latest `limit` kept reports, newest first."""
    cur = await conn.execute(HISTORY, (token_hash, limit))
    return list(await cur.fetchall())


async def write_gateway_states(
    conn: AsyncConnection[Any], states: Sequence[tuple[bytes, list[str]]]
) -> None:
    """Store each gateway's states (an array literal per gateway) for the dashboard."""
    if not states:
        return
    hashes = [token for token, _ in states]
    literals = ["{" + ",".join(names) + "}" for _, names in states]
    await conn.execute(WRITE_STATES, (hashes, literals))


async def record_contacts(
    conn: AsyncConnection[Any], contacts: Sequence[tuple[bytes, datetime]]
) -> None:
    """Move each known gateway's last contact forward (unknown tokens: nothing to move)."""
    if contacts:
        hashes, times = zip(*contacts, strict=True)
        await conn.execute(CONTACTS, (list(hashes), list(times)))


async def delete_old_reports(
    conn: AsyncConnection[Any], cutoff: datetime, batch: int = 5000, max_batches: int = 20
) -> int:
    """Delete history rows received before `cutoff`, batch by batch (`conn` in autocommit)."""
    deleted = 0
    for _ in range(max_batches):
        cur = await conn.execute(DELETE_OLD, (cutoff, batch))
        deleted += max(cur.rowcount, 0)
        if cur.rowcount < batch:
            break
    return deleted


STATE_COUNTS = """SELECT s.state, count(*) FROM fleet.gateways g, unnest(g.states) AS s(state)
GROUP BY 1"""
VERSION_COUNTS = """SELECT version, count(*) FROM fleet.gateways
WHERE NOT 'retired' = ANY(states) GROUP BY 1 ORDER BY 2 DESC, 1"""
TOTALS = """SELECT count(*), coalesce(sum(quarantined_rows), 0), coalesce(max(lag_s), 0),
       min(disk_free_bytes)
FROM fleet.gateways WHERE NOT 'retired' = ANY(states)"""


async def take_state_turn(conn: AsyncConnection[Any]) -> bool:
    """Whether this transaction got the deployment-wide turn to derive the fleet's states (held
    until it ends; another replica deriving at the same moment makes this one skip)."""
    return await transaction_turn(conn, FLEET_STATE_LOCK)


async def fleet_totals(
    conn: AsyncConnection[Any],
) -> tuple[dict[str, int], list[tuple[str, int]], tuple[int, int, float, int | None]]:
    """Stored gateway states counted, (version, gateways) most used first, and (gateways,
    quarantined rows, worst lag s, least free disk bytes) over the gateways not retired."""
    cur = await conn.execute(STATE_COUNTS)
    states = {str(s): int(n) for s, n in await cur.fetchall()}
    cur = await conn.execute(VERSION_COUNTS)
    versions = [(str(v), int(n)) for v, n in await cur.fetchall()]
    cur = await conn.execute(TOTALS)
    row = await cur.fetchone()
    assert row is not None
    totals = (int(row[0]), int(row[1]), float(row[2]), int(row[3]) if row[3] is not None else None)
    return states, versions, totals
