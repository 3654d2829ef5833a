"""Corrections: which intervals of a device's energy changed after they could be read as final.

An hour is final, for the people who bill it, once it has ended and `INGESTD_ROLLUP_SETTLE_S`
has passed. When the housekeeping later recomputes a stored hour (`storage.rollup`) and its
counter summaries change — a late back-fill, a gateway catching up after days offline, a repair
by reconciliation — the energy of every hour between the nearest hour holding each register before
it and the nearest one after it can change with it (the crossing segments are split over the hours
they span: docs/ENERGY.md). That span, whole hours, is recorded in `fleet.energy_revisions` with
`revised_at`, the time of the recompute:

    customer_id, device_id, span_start, span_end, revised_at

What counts as a change, on both paths alike:
- a stored hour whose counter summaries differ from those stored before (averages alone do not
  change energy);
- an hour stored for the first time whose first mark came after it was final (its energy was
  readable before, as nothing or as part of a hole).
Changes within `INGESTD_ROLLUP_SETTLE_S` of an hour's end are not revisions: read an hour as final
only after that. A re-sent row that was already stored changes nothing and records nothing.

`GET …/customers/{code}/energy/changes?since=` lists them with the local days they touch
(`changes_since`), so a billing export can re-issue the bills of those days.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from ingestd.storage.aggregate import COUNTER_COLUMNS
from ingestd.storage.segments import nearest

__all__ = [
    "CHANGE_FIELDS",
    "MERGED_SPANS",
    "MERGE_SPANS",
    "changes_since",
    "create_revision_functions",
    "record_revisions",
    "revised_span",
    "site_zones",
    "stored_counters",
]

_HOUR = "INTERVAL '1 hour'"


def revised_span(table: str, function: str = "fleet.revised_span") -> str:
    """`function`: the span of hours whose energy a change of hour `p_hour` can move,
    from the nearest hour before it holding each register to the nearest one after it (the hour
    itself when none), looked up in the stored hours `table`: on plain PostgreSQL the rollup table
    itself (the view would compute every hour still marked from its raw rows, those being
    recorded included; an hour not rolled up yet is skipped, which only widens the span)."""
    near = "".join(
        nearest(
            "h.bucket", f"AND (h.{c}).last_time IS NOT NULL", "p_hour", f"p_hour + {_HOUR}", table
        )
        for c in COUNTER_COLUMNS
    )
    return f"""
CREATE OR REPLACE FUNCTION {function}(
    p_customer bigint, p_device bigint, p_hour timestamptz,
    OUT span_start timestamptz, OUT span_end timestamptz)
LANGUAGE sql STABLE SET jit = off AS $$
WITH near AS (
    SELECT p_hour AS bucket
    {near}
)
SELECT min(bucket), max(bucket) + {_HOUR} FROM near
$$
"""


# Spans of the changed hours (customer ids, device ids, hours), overlapping ones of a device
# merged: `merged` (customer_id, device_id, span_start, span_end), from the CTE `spans` by
# `MERGE_SPANS`. The stored energy is recomputed over spans merged the same way
# (`storage.energy_sets`, which looks the spans up inline).
MERGE_SPANS = """, ordered AS (
    SELECT *, max(span_end) OVER (PARTITION BY customer_id, device_id ORDER BY span_start
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_end
    FROM spans
), islands AS (
    SELECT *, count(*) FILTER (WHERE before_end IS NULL OR span_start > before_end)
                  OVER (PARTITION BY customer_id, device_id ORDER BY span_start) AS island
    FROM ordered
), merged AS (
    SELECT customer_id, device_id, min(span_start) AS span_start, max(span_end) AS span_end
    FROM islands GROUP BY customer_id, device_id, island
)"""
MERGED_SPANS = f"""
WITH spans AS (
    SELECT c.customer_id, c.device_id, s.span_start, s.span_end
    FROM (SELECT DISTINCT * FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[])
          AS u(customer_id, device_id, bucket)) AS c
    CROSS JOIN LATERAL fleet.revised_span(c.customer_id, c.device_id, c.bucket) AS s
){MERGE_SPANS}"""
# The spans, recorded at now().
RECORD_REVISIONS = f"""{MERGED_SPANS}
INSERT INTO fleet.energy_revisions (customer_id, device_id, span_start, span_end)
SELECT customer_id, device_id, span_start, span_end FROM merged
ON CONFLICT DO NOTHING
"""

# TimescaleDB: the stored (materialized) counter summaries of some hours, read from the continuous
# aggregate's own hypertable (the view would add what is not materialized yet, computed live).
MATERIALIZED_TABLE = """
SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
FROM timescaledb_information.continuous_aggregates
WHERE view_schema = 'fleet' AND view_name = 'hourly_per_device'
"""
_STORED_COUNTERS = f"""
SELECT m.customer_id, m.device_id, m.bucket, ({", ".join(f"m.{c}" for c in COUNTER_COLUMNS)})::text
FROM {{table}} m
JOIN unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS u(customer_id, device_id, bucket)
  ON m.customer_id = u.customer_id AND m.device_id = u.device_id AND m.bucket = u.bucket
"""

CHANGE_FIELDS = ("device_id", "site_id", "from", "to", "revised_at", "zone", "days")

SITE_ZONES = (
    "SELECT DISTINCT timezone FROM fleet.sites WHERE customer_id = %s AND timezone IS NOT NULL"
)

# The revisions after `since`, oldest first: the first `limit` and every other row of the last
# one's `revised_at` (a page never splits one recompute's rows), with `more` when any follow.
# Each row has the local dates it touches in its site's zone, when that zone is one of `zones`
# (checked against the database's zone names), else in UTC.
CHANGES = """
WITH mine AS (
    SELECT r.device_id, d.site_id, r.span_start, r.span_end, r.revised_at,
           CASE WHEN s.timezone = ANY(%(zones)s::text[]) THEN s.timezone ELSE 'UTC' END AS zone
    FROM fleet.energy_revisions r
    LEFT JOIN fleet.devices d ON d.customer_id = r.customer_id AND d.id = r.device_id
    LEFT JOIN fleet.sites s ON s.customer_id = r.customer_id AND s.id = d.site_id
    WHERE r.customer_id = %(customer_id)s AND r.revised_at > %(since)s
      AND (%(device_id)s::bigint IS NULL OR r.device_id = %(device_id)s)
      AND (%(site_id)s::bigint IS NULL OR d.site_id = %(site_id)s)
), page_end AS (
    SELECT coalesce((SELECT revised_at FROM mine ORDER BY revised_at OFFSET %(limit)s - 1 LIMIT 1),
                    TIMESTAMPTZ 'infinity') AS last
)
SELECT m.device_id, m.site_id, m.span_start AS "from", m.span_end AS "to", m.revised_at, m.zone,
       ARRAY(SELECT generate_series((m.span_start AT TIME ZONE m.zone)::date,
                                    ((m.span_end - INTERVAL '1 microsecond') AT TIME ZONE m.zone)::date,
                                    INTERVAL '1 day')::date) AS days,
       EXISTS (SELECT 1 FROM mine WHERE mine.revised_at > page_end.last) AS more
FROM mine m, page_end WHERE m.revised_at <= page_end.last
ORDER BY m.revised_at, m.device_id, m.span_start
"""


async def create_revision_functions(conn: AsyncConnection[Any], stored_hours: str) -> None:
    """(Re)create `fleet.revised_span` over `stored_hours` (`fleet.hourly_rollup` on plain
    PostgreSQL, the continuous aggregate on TimescaleDB): after making it."""
    await conn.execute(revised_span(stored_hours))


async def stored_counters(
    conn: AsyncConnection[Any], keys: list[tuple[Any, ...]]
) -> dict[tuple[Any, ...], str]:
    """TimescaleDB: the materialized counter summaries of the hours `keys` (customer, device,
    hour), as text, for comparing before and after a refresh."""
    if not keys:
        return {}
    cur = await conn.execute(MATERIALIZED_TABLE)
    row = await cur.fetchone()
    if row is None:
        return {}
    columns = [list(c) for c in zip(*keys, strict=True)]
    cur = await conn.execute(_STORED_COUNTERS.format(table=row[0]), columns)
    return {(c, d, b): text for c, d, b, text in await cur.fetchall()}


async def record_revisions(conn: AsyncConnection[Any], changed: list[tuple[Any, ...]]) -> None:
    """Record the spans whose energy the changed hours (customer, device, hour) can move."""
    if changed:
        columns = [list(c) for c in zip(*changed, strict=True)]
        await conn.execute(RECORD_REVISIONS, columns)


async def site_zones(conn: AsyncConnection[Any], customer_id: int) -> list[str]:
    """The time zones of the customer's sites, deleted ones too (their devices' energy was there)."""
    cur = await conn.execute(SITE_ZONES, (customer_id,))
    return [str(row[0]) for row in await cur.fetchall()]


async def changes_since(
    conn: AsyncConnection[Any],
    customer_id: int,
    since: datetime,
    *,
    device_id: int | None,
    site_id: int | None,
    limit: int,
    zones: list[str],
) -> tuple[list[dict[str, Any]], bool]:
    """A page of revisions after `since` (see CHANGES) and whether more follow."""
    params = {"customer_id": customer_id, "since": since, "device_id": device_id,
              "site_id": site_id, "limit": limit, "zones": zones}  # fmt: skip
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CHANGES, params)
        rows = list(await cur.fetchall())
    return rows, bool(rows and rows[0]["more"])
