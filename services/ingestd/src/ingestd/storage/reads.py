"""Queries that only read: readiness and the operators' read API (the push token lookup is
`ingestd.storage.tokens`).

Energy per hour and per local day and the completeness report call the SQL functions of
`ingestd.storage.energy` (docs/ENERGY.md).

Each returns plain rows or values; turning them into HTTP answers is the handlers' job
(`ingestd.handlers`).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from ingestd.storage.customers import CUSTOMER_ID

__all__ = [
    "COMPLETENESS_FIELDS",
    "DAILY_FIELDS",
    "HOURLY_FIELDS",
    "applied_migrations",
    "completeness_rows",
    "customer_id",
    "customer_summaries",
    "daily_rows",
    "daily_rows_at",
    "daily_usual",
    "device_timezone",
    "devices_of",
    "hourly_rows",
    "hourly_rows_at",
    "hourly_usual",
    "sites_of",
    "timezone_known",
]

APPLIED_MIGRATIONS = "SELECT migration_id FROM public._yoyo_migration"

# Per customer, from the hourly counters each batch updates (migration 0005): the current hour
# and the 24 before it, so the figure covers at least the last 24 hours (at most 25).
CUSTOMERS = """
SELECT c.code, c.name, c.created_at, c.first_seen_at, c.last_seen_at,
       extract(epoch FROM now() - c.last_seen_at)::double precision,
       coalesce(k.accepted, 0)::bigint, coalesce(k.rejected, 0)::bigint,
       (SELECT count(*) FROM fleet.devices d WHERE d.customer_id = c.id AND d.deleted_at IS NULL),
       (SELECT count(*) FROM fleet.devices d
         WHERE d.customer_id = c.id AND d.deleted_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM fleet.power_measurements m
                           WHERE m.customer_id = c.id AND m.device_id = d.id
                             AND m.time > now() - %s::interval))
FROM fleet.customers c
LEFT JOIN (
    SELECT customer_id, sum(accepted) AS accepted, sum(rejected) AS rejected
    FROM fleet.customer_hourly_counts
    WHERE hour >= date_bin('1 hour', now(), timestamptz 'epoch') - interval '24 hours'
    GROUP BY customer_id
) k ON k.customer_id = c.id
ORDER BY c.code
"""
SITES = """SELECT id, name, timezone, address, updated_at, deleted_at
           FROM fleet.sites WHERE customer_id = %s ORDER BY id"""
DEVICES = """SELECT id, site_id, serial_number, model, name, updated_at, deleted_at
             FROM fleet.devices WHERE customer_id = %s ORDER BY id"""
_ROW_FIELDS = (
    "samples", "p_total_avg", "p_total_min", "p_total_max", "v1_avg", "v2_avg", "v3_avg",
    "i1_avg", "i2_avg", "i3_avg", "pf_total_avg", "freq_avg",
    "energy_imp_kwh", "energy_exp_kwh", "energy_q_imp_kvarh", "energy_q_exp_kvarh",
    "energy_reset", "energy_estimated", "expected_samples",
)  # fmt: skip
# The hour as the answer writes it (RFC 3339 in UTC, `Z`): made here, one text per row, instead
# of a datetime in the session's zone that the handler converts (2,232 hours: ~1.5 ms of the
# server's time against ~4 ms of ingestd's Python).
UTC_TEXT = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
HOURLY = (f"SELECT {UTC_TEXT.format('bucket')}, {', '.join(_ROW_FIELDS)} "
          "FROM fleet.hourly_energy(%s, %s, %s, %s)")  # fmt: skip
HOURLY_FIELDS = ("bucket", *_ROW_FIELDS)
"""The columns of `HOURLY`, in order (`bucket` the hour's start as RFC 3339 text in UTC)."""
DAILY = f"""SELECT day, day_start, day_end, {", ".join(_ROW_FIELDS)}
            FROM fleet.daily_energy(%s, %s, %s, %s, %s)"""
DAILY_FIELDS = ("day", "day_start", "day_end", *_ROW_FIELDS)
"""The columns of `DAILY`, in order."""
# A range read in parts (`*_at`: the range's usual interval given, each part's rows as the whole
# range's): the usual interval over the hours [ceil(from), ceil(to)) or the local days' midnights.
_CEIL_HOUR = ("date_bin(INTERVAL '1 hour', {t}::timestamptz - INTERVAL '1 microsecond', "
              "TIMESTAMPTZ '2000-01-01 00:00:00+00') + INTERVAL '1 hour'")  # fmt: skip
HOURLY_USUAL = (f"SELECT fleet.usual_interval_s(%(c)s, %(d)s, {_CEIL_HOUR.format(t='%(from)s')}, "
                f"{_CEIL_HOUR.format(t='%(to)s')})")  # fmt: skip
DAILY_USUAL = """SELECT fleet.usual_interval_s(%(c)s, %(d)s, %(from)s::timestamp AT TIME ZONE %(tz)s,
                                              %(to)s::timestamp AT TIME ZONE %(tz)s)"""
HOURLY_AT = HOURLY.replace("hourly_energy(%s, %s, %s, %s)", "hourly_energy_at(%s, %s, %s, %s, %s)")
DAILY_AT = DAILY.replace(
    "daily_energy(%s, %s, %s, %s, %s)", "daily_energy_at(%s, %s, %s, %s, %s, %s)"
)

DEVICE_TIMEZONE = """
SELECT d.site_id, s.timezone FROM fleet.devices d
LEFT JOIN fleet.sites s ON s.customer_id = d.customer_id AND s.id = d.site_id
WHERE d.customer_id = %s AND d.id = %s
"""
TIMEZONE_KNOWN = "SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = %s)"

# The devices of the customer's devices full set, and any other device with samples in the range.
COMPLETENESS = """
WITH ids AS (
    SELECT id FROM fleet.devices WHERE customer_id = %(customer)s
    UNION
    SELECT DISTINCT device_id FROM fleet.hourly_per_device
    WHERE customer_id = %(customer)s AND bucket >= %(from)s AND bucket < %(to)s
)
SELECT ids.id, d.site_id, d.name, d.deleted_at IS NOT NULL,
       c.usual_interval_s, c.samples, c.expected_samples, c.first_sample, c.last_sample,
       c.last_sample_ever, g.starts, g.ends, g.ongoing
FROM ids
LEFT JOIN fleet.devices d ON d.customer_id = %(customer)s AND d.id = ids.id
CROSS JOIN LATERAL fleet.device_completeness(%(customer)s, ids.id, %(from)s, %(to)s) AS c
CROSS JOIN LATERAL (
    SELECT array_agg(gap_from ORDER BY gap_from) AS starts, array_agg(gap_to ORDER BY gap_from) AS ends,
           array_agg(ongoing ORDER BY gap_from) AS ongoing
    FROM fleet.sampling_gaps(%(customer)s, ids.id, %(from)s, %(to)s, %(factor)s * c.usual_interval_s)
) AS g
ORDER BY ids.id
"""
COMPLETENESS_FIELDS = (
    "device_id", "site_id", "name", "deleted", "usual_interval_s", "samples", "expected_samples",
    "first_sample_at", "last_sample_at", "last_sample_ever_at", "gap_starts", "gap_ends",
    "gap_ongoing",
)  # fmt: skip
"""The columns of `COMPLETENESS`, in order."""

Rows = list[tuple[Any, ...]]


async def _all(
    conn: AsyncConnection[Any], query: str, params: Any = (), *, binary: bool = False
) -> Rows:
    """Every row; `binary` for many rows of numbers: half the client's CPU of text (2,232 hours
    of 20 columns: ~11 -> ~5 ms), and the server skips formatting the floats as text."""
    cur = await conn.execute(query, params, binary=binary)
    return list(await cur.fetchall())


async def applied_migrations(conn: AsyncConnection[Any]) -> set[str]:
    """Ids of the applied migrations (raises UndefinedTable before the first migration)."""
    return {row[0] for row in await _all(conn, APPLIED_MIGRATIONS)}


async def customer_id(conn: AsyncConnection[Any], code: str) -> int | None:
    """The id of the customer with that code; None when there is none."""
    cur = await conn.execute(CUSTOMER_ID, (code,))
    row = await cur.fetchone()
    return int(row[0]) if row is not None else None


async def customer_summaries(conn: AsyncConnection[Any], stale_after: timedelta) -> Rows:
    """code, name, created_at, first_seen_at, last_seen_at, seconds since the last batch,
    measurement rows accepted and rows dead-lettered in the last 24 h, devices (not deleted),
    devices without a sample in the last `stale_after`; by code."""
    return await _all(conn, CUSTOMERS, (stale_after,))


async def sites_of(conn: AsyncConnection[Any], customer: int) -> Rows:
    """id, name, timezone, address, updated_at, deleted_at; by id."""
    return await _all(conn, SITES, (customer,))


async def devices_of(conn: AsyncConnection[Any], customer: int) -> Rows:
    """id, site_id, serial_number, model, name, updated_at, deleted_at; by id."""
    return await _all(conn, DEVICES, (customer,))


async def hourly_rows(
    conn: AsyncConnection[Any], customer: int, device_id: int, start: datetime, end: datetime
) -> Rows:
    """The device's `HOURLY_FIELDS` rows with start <= bucket < end, by bucket: every hour with
    samples or with known energy (hours inside a hole have 0 samples)."""
    return await _all(conn, HOURLY, (customer, device_id, start, end), binary=True)


async def daily_rows(
    conn: AsyncConnection[Any], customer: int, device_id: int, first: date, end: date, tz: str
) -> Rows:
    """The device's `DAILY_FIELDS` rows for the local days first <= day < end in `tz`, by day."""
    return await _all(conn, DAILY, (customer, device_id, first, end, tz), binary=True)


async def hourly_usual(
    conn: AsyncConnection[Any], customer: int, device_id: int, start: datetime, end: datetime
) -> float | None:
    """The usual interval `hourly_rows` of [start, end) uses (None: fewer than two samples)."""
    params = {"c": customer, "d": device_id, "from": start, "to": end}
    cur = await conn.execute(HOURLY_USUAL, params)
    row = await cur.fetchone()
    return row[0] if row else None


async def hourly_rows_at(
    conn: AsyncConnection[Any],
    customer: int,
    device_id: int,
    start: datetime,
    end: datetime,
    usual: float | None,
) -> Rows:
    """`hourly_rows` of [start, end) as part of a longer range whose usual interval is `usual`
    (`hourly_usual`): a range's parts, whole hours apart, give its rows."""
    return await _all(conn, HOURLY_AT, (customer, device_id, start, end, usual), binary=True)


async def daily_usual(
    conn: AsyncConnection[Any], customer: int, device_id: int, first: date, end: date, tz: str
) -> float | None:
    """The usual interval `daily_rows` of [first, end) uses (None: fewer than two samples)."""
    params = {"c": customer, "d": device_id, "from": first, "to": end, "tz": tz}
    cur = await conn.execute(DAILY_USUAL, params)
    row = await cur.fetchone()
    return row[0] if row else None


async def daily_rows_at(
    conn: AsyncConnection[Any],
    customer: int,
    device_id: int,
    first: date,
    end: date,
    tz: str,
    usual: float | None,
) -> Rows:
    """`daily_rows` of [first, end) as part of a longer range whose usual interval is `usual`."""
    return await _all(conn, DAILY_AT, (customer, device_id, first, end, tz, usual), binary=True)


async def device_timezone(
    conn: AsyncConnection[Any], customer: int, device_id: int
) -> tuple[int, str | None] | None:
    """(site id, the site's time zone or None when the site is unknown), or None when the device
    is unknown."""
    cur = await conn.execute(DEVICE_TIMEZONE, (customer, device_id))
    row = await cur.fetchone()
    return (int(row[0]), row[1]) if row is not None else None


# Zones PostgreSQL said it knows. `pg_timezone_names` reads the whole zone database at each query
# (~30 ms, more than a year of stored days costs); a zone, once known, stays known (tzdata keeps
# old names as links), so each process asks once per zone. At most the database's ~600 names;
# unknown names are asked again (an error answer: rare, and not to be remembered at a client's
# choosing).
_KNOWN_ZONES: set[str] = set()


async def timezone_known(conn: AsyncConnection[Any], name: str) -> bool:
    """Whether PostgreSQL knows the time zone `name` (its own zone database decides)."""
    if name in _KNOWN_ZONES:
        return True
    cur = await conn.execute(TIMEZONE_KNOWN, (name,))
    row = await cur.fetchone()
    if row and row[0]:
        _KNOWN_ZONES.add(name)
        return True
    return False


async def completeness_rows(
    conn: AsyncConnection[Any], customer: int, start: datetime, end: datetime, gap_factor: float
) -> Rows:
    """`COMPLETENESS_FIELDS` per device of the customer, by device id; gaps are silences longer
    than `gap_factor` usual intervals."""
    params = {"customer": customer, "from": start, "to": end, "factor": gap_factor}
    return await _all(conn, COMPLETENESS, params)
