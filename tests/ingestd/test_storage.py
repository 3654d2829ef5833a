"""Central storage: bootstrap, partitions or hypertable, the hourly aggregate and retention.

Every test here runs twice, through the same HTTP ingest path and the same queries: on plain
PostgreSQL, and on TimescaleDB — the latter skips, saying so, where the extension is not
installed (see tests/fix_pg.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient
from fleetdev.pgcluster import PgCluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingestd.housekeeping import housekeeping_cycle
from ingestd.keys import STORAGE
from ingestd.migrate import apply_migrations
from ingestd.settings import Settings
from ingestd.storage import (
    StorageMode,
    StoragePlan,
    bootstrap_database,
    bootstrap_storage,
    detect_mode,
)
from ingestd.storage.aggregate import AGGREGATE_COLUMNS
from ingestd.storage.partitions import partition_name, week_start
from ingestd.storage.state import StorageState
from psycopg import AsyncConnection

from tests.fix_ingestd import PostBatch, ThreadedIngestd
from tests.fix_pg import wait_for
from tests.samples import NOW, measurement, measurements


@pytest.fixture
def central_db(storage_db: str) -> str:
    """This module's central database: each storage path in turn."""
    return storage_db


def _rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


async def _cycle(settings: Settings, *, maintenance: bool = False) -> None:
    """One housekeeping cycle of our own, waiting (bounded) while the app's loop holds the turn."""
    async with await AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
        state = StorageState(mode=await detect_mode(conn), plan=settings.storage)
        for _ in range(100):
            if await housekeeping_cycle(conn, state, settings, maintenance=maintenance) is not None:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the housekeeping turn stayed taken for 10 s")


def _mode(dsn: str) -> StorageMode | None:
    async def detect() -> StorageMode | None:
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await detect_mode(conn)

    return asyncio.run(detect())


def test_bootstrap_is_idempotent_and_safe_from_several_replicas(central_db: str) -> None:
    """Running the bootstrap again, from four connections at once, changes nothing and fails nowhere."""

    before = _mode(central_db)
    plan = StoragePlan(timescaledb="on" if before is StorageMode.TIMESCALEDB else "off")

    async def four_at_once() -> list[StorageMode]:
        conns = [await AsyncConnection.connect(central_db, autocommit=True) for _ in range(4)]
        try:
            return list(await asyncio.gather(*(bootstrap_storage(c, plan) for c in conns)))
        finally:
            for conn in conns:
                await conn.close()

    modes = asyncio.run(four_at_once())
    assert before is not None
    assert set(modes) == {before}
    assert _mode(central_db) is before


COVERED = "SELECT indnatts - indnkeyatts FROM pg_index WHERE indexrelid = %s::regclass"


def test_primary_keys_carry_the_reads_columns(central_db: str) -> None:
    """The stored energy's primary key and (plain PostgreSQL) the rollup's carry the columns the
    energy reads take, so that they read the index alone; a rollup made with the bare key gets
    the covering one from the next bootstrap, its rows kept."""
    assert _rows(central_db, COVERED, "fleet.energy_hours_pkey") == [(9,)]
    if _mode(central_db) is not StorageMode.POSTGRESQL:
        return
    assert _rows(central_db, COVERED, "fleet.hourly_rollup_pkey") == [(12,)]
    with psycopg.connect(central_db) as conn:
        conn.execute("""INSERT INTO fleet.hourly_rollup (bucket, customer_id, device_id, samples)
                        VALUES ('2026-01-01 00:00+00', 1, 987654, 7)""")
        conn.execute("""ALTER TABLE fleet.hourly_rollup DROP CONSTRAINT hourly_rollup_pkey,
                        ADD PRIMARY KEY (customer_id, device_id, bucket)""")
    assert _rows(central_db, COVERED, "fleet.hourly_rollup_pkey") == [(0,)]
    asyncio.run(bootstrap_database(central_db, StoragePlan(timescaledb="off")))
    assert _rows(central_db, COVERED, "fleet.hourly_rollup_pkey") == [(12,)]
    assert _rows(
        central_db, "SELECT samples FROM fleet.hourly_rollup WHERE device_id = 987654"
    ) == [(7,)]


def test_storage_layout(central_db: str) -> None:
    """Plain PostgreSQL: weekly range partitions with the coming weeks made. TimescaleDB: a
    16-hour-chunk hypertable compressed by (customer_id, device_id) 1 hour after a chunk ends, by
    a job every hour, and a real-time continuous aggregate with its refresh policy. Both: the
    readers' view `fleet.power_measurements` over the stored table."""
    if _mode(central_db) is StorageMode.POSTGRESQL:
        names = [
            r[0]
            for r in _rows(
                central_db,
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid",
            )
        ]
        assert len(names) >= 5
        assert all(n.startswith("power_measurements_w") for n in names)
        kinds = _rows(
            central_db,
            "SELECT relkind::text FROM pg_class WHERE oid IN ('fleet.power_measurements_scaled'::regclass, 'fleet.hourly_per_device'::regclass, 'fleet.power_measurements'::regclass) ORDER BY 1",
        )
        assert kinds == [("p",), ("v",), ("v",)]
        return
    assert _rows(
        central_db,
        """SELECT d.time_interval, h.compression_enabled FROM timescaledb_information.dimensions d
           JOIN timescaledb_information.hypertables h USING (hypertable_schema, hypertable_name)
           WHERE h.hypertable_name = 'power_measurements_scaled'""",
    ) == [(timedelta(hours=16), True)]
    settings_rows = _rows(
        central_db,
        """SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc
           FROM timescaledb_information.compression_settings WHERE hypertable_name = 'power_measurements_scaled'
           ORDER BY coalesce(segmentby_column_index, 99), orderby_column_index""",
    )
    assert settings_rows == [
        ("customer_id", 1, None, None),
        ("device_id", 2, None, None),
        ("time", None, 1, False),
    ]
    assert _rows(
        central_db,
        "SELECT materialized_only FROM timescaledb_information.continuous_aggregates WHERE view_name = 'hourly_per_device'",
    ) == [(False,)]
    jobs = {r[0] for r in _rows(central_db, "SELECT proc_name FROM timescaledb_information.jobs")}
    assert {"policy_compression", "policy_refresh_continuous_aggregate"} <= jobs
    assert _rows(
        central_db,
        """SELECT schedule_interval, config->>'compress_after' FROM timescaledb_information.jobs
           WHERE proc_name = 'policy_compression'""",
    ) == [(timedelta(hours=1), "01:00:00")]


async def test_backfill_into_a_week_without_partition_works(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A sample 400 days old lands (its week's partition is made on demand) and is counted."""
    old = NOW - timedelta(days=400)
    resp = await post_batch(
        customer_token,
        "measurements",
        [measurement(1, old), measurement(1, NOW - timedelta(minutes=1))],
    )
    assert resp.status == 200
    assert (await resp.json())["accepted"] == 2
    assert _rows(
        central_db, "SELECT count(*) FROM fleet.power_measurements WHERE time = %s", old
    ) == [(1,)]


async def test_90_day_old_sample_reaches_the_hourly_row_within_one_cycle(
    post_batch: PostBatch, customer_token: str, central_db: str, ingestd_settings: Settings
) -> None:
    """After an hour was aggregated, a 90-day-old back-fill into it shows in its hourly row after one refresh cycle."""
    hour = (NOW - timedelta(days=90)).replace(minute=0, second=0)
    await post_batch(
        customer_token,
        "measurements",
        [measurement(1, hour + timedelta(minutes=m), p_total=10.0) for m in (0, 10)],
    )
    await _cycle(ingestd_settings)
    query = "SELECT samples, p_total_avg, p_total_max FROM fleet.hourly_per_device WHERE device_id = 1 AND bucket = %s"
    assert _rows(central_db, query, hour) == [(2, 10.0, 10.0)]

    await post_batch(
        customer_token, "measurements", [measurement(1, hour + timedelta(minutes=30), p_total=40.0)]
    )
    await _cycle(ingestd_settings)
    assert _rows(central_db, query, hour) == [(3, 20.0, 40.0)]
    assert _rows(central_db, "SELECT count(*) FROM fleet.hourly_dirty") == [(0,)]


async def test_hourly_columns_and_counter_summaries(
    post_batch: PostBatch, customer_token: str, central_db: str, ingestd_settings: Settings
) -> None:
    """The hourly row has count, first/last time, p_total avg/min/max, the phase averages, and per
    register the first and last sample and the increase with resets counted."""
    hour = (NOW - timedelta(days=2)).replace(minute=0, second=0)
    samples = (
        (0, 1.0, 220.0, 100.0, 5.0),
        (20, 2.0, 230.0, 101.5, 5.0),
        (59, 6.0, 240.0, 3.0, 5.5),
    )
    rows = [
        measurement(
            5,
            hour + timedelta(minutes=m),
            p_total=p,
            v1=v1,
            energy_imp_kwh=imp,
            energy_exp_kwh=exp,
            energy_q_exp_kvarh=None,
        )
        for m, p, v1, imp, exp in samples
    ]
    await post_batch(customer_token, "measurements", rows)
    for refreshed in (False, True):
        if refreshed:
            await _cycle(ingestd_settings)
        (row,) = _rows(
            central_db,
            f"SELECT {', '.join(AGGREGATE_COLUMNS)} FROM fleet.hourly_per_device WHERE device_id = 5",
        )
        got = dict(zip(AGGREGATE_COLUMNS, row, strict=True))
        assert got["bucket"] == hour
        assert got["samples"] == 3
        assert (got["first_time"], got["last_time"]) == (hour, hour + timedelta(minutes=59))
        assert (got["max_gap_start"], got["max_gap_end"]) == (
            hour + timedelta(minutes=20),
            hour + timedelta(minutes=59),
        )
        assert (got["p_total_avg"], got["p_total_min"], got["p_total_max"]) == (3.0, 1.0, 6.0)
        assert got["v1_avg"] == pytest.approx(230.0)
        (imp, exp, q_exp) = _rows(
            central_db,
            """SELECT row_to_json(energy_imp_kwh_counter)::text, row_to_json(energy_exp_kwh_counter)::text,
                      energy_q_exp_kvarh_counter IS NULL
               FROM fleet.hourly_per_device WHERE device_id = 5""",
        )[0]
        assert json.loads(imp) == {
            "first_time": (hour).isoformat(),
            "first_value": 100.0,
            "last_time": (hour + timedelta(minutes=59)).isoformat(),
            "last_value": 3.0,
            "increase": 4.5,  # 100 -> 101.5, then a reset: 3 counts from zero
            "resets": 1,
            "max_spacing_s": 39 * 60.0,
        }
        assert (json.loads(exp)["increase"], json.loads(exp)["resets"]) == (0.5, 0)
        assert q_exp is True


@pytest.mark.parametrize("timescaledb", ["off", "on"])
def test_existing_rows_survive_the_bootstrap(pg_cluster: PgCluster, timescaledb: str) -> None:
    """Bootstrapping a database that already holds measurements keeps every row and aggregates them."""
    from tests.fix_pg import TIMESCALEDB

    if timescaledb == "on" and not TIMESCALEDB:
        pytest.skip(
            "TimescaleDB path not tested: the extension is not installed on this machine's PostgreSQL"
        )
    dsn = pg_cluster.create_database(f"preexisting_{timescaledb}")
    apply_migrations(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO fleet.customers (code) VALUES ('OLD1')")
        conn.execute(
            """INSERT INTO fleet.power_measurements (time, customer_id, device_id, received_at, p_total)
               SELECT t, 1, 1, now(), 2.0 FROM generate_series(now() - interval '60 days', now(), interval '1 hour') t"""
        )
    mode = asyncio.run(bootstrap_database(dsn, StoragePlan(timescaledb=timescaledb)))
    assert mode is (StorageMode.POSTGRESQL if timescaledb == "off" else StorageMode.TIMESCALEDB)
    assert _rows(dsn, "SELECT count(*) FROM fleet.power_measurements") == [(1441,)]
    assert _rows(dsn, "SELECT count(*), sum(samples) FROM fleet.hourly_per_device") == [
        (1441, 1441)
    ]


async def test_retention_drops_old_weeks_but_not_the_aggregate(
    post_batch: PostBatch, customer_token: str, central_db: str, ingestd_settings: Settings
) -> None:
    """Raw-data retention drops old weeks of samples; their hourly rows stay."""
    from dataclasses import replace

    old = (NOW - timedelta(days=120)).replace(minute=0, second=0)
    await post_batch(
        customer_token,
        "measurements",
        [measurement(1, old), measurement(1, NOW - timedelta(minutes=5))],
    )
    await _cycle(ingestd_settings)
    with_retention = replace(
        ingestd_settings, storage=replace(ingestd_settings.storage, retention=timedelta(days=60))
    )
    await _cycle(with_retention, maintenance=True)
    assert _rows(central_db, "SELECT count(*) FROM fleet.power_measurements") == [(1,)]
    assert _rows(
        central_db, "SELECT samples FROM fleet.hourly_per_device WHERE bucket = %s", old
    ) == [(1,)]


PACKED_INDEXES = """
SELECT c.relname, coalesce(ic.reloptions @> ARRAY['fillfactor=100'], false)
FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid
JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE h.inhparent = 'fleet.power_measurements_scaled'::regclass ORDER BY 1
"""


async def test_housekeeping_packs_closed_weeks_indexes_once(
    post_batch: PostBatch,
    ingestd_client: TestClient[Any, Any],
    customer_token: str,
    central_db: str,
    ingestd_settings: Settings,
) -> None:
    """On plain PostgreSQL each maintenance round packs one closed week's primary-key index
    (oldest first, fillfactor 100, rebuilt online), never the open week's; rows stay readable and
    a back-fill into a packed week still lands."""
    # The app's own housekeeping runs one cycle (with maintenance) as it starts: let it finish
    # before the weeks exist, or under load it packs one of them behind the test's back.
    app_state = ingestd_client.server.app[STORAGE]
    await wait_for(
        lambda: app_state.last_maintenance > float("-inf"), what="the app's first maintenance"
    )
    old = [NOW - timedelta(days=d) for d in (40, 20)]
    rows = [measurement(1, t + timedelta(minutes=m)) for t in old for m in range(30)]
    assert (await post_batch(customer_token, "measurements", rows)).status == 200
    partitioned = (
        "SELECT relkind = 'p' FROM pg_class WHERE oid = 'fleet.power_measurements_scaled'::regclass"
    )
    if _rows(central_db, partitioned) != [(True,)]:  # TimescaleDB: chunks, left to compression
        await _cycle(ingestd_settings, maintenance=True)
        assert not any(packed for _, packed in _rows(central_db, PACKED_INDEXES))
        return
    weeks = {w: packed for w, packed in _rows(central_db, PACKED_INDEXES)}
    assert weeks and not any(weeks.values())
    await _cycle(ingestd_settings, maintenance=True)
    packed = [w for w, p in _rows(central_db, PACKED_INDEXES) if p]
    assert len(packed) == 1
    await _cycle(ingestd_settings, maintenance=True)
    packed = [w for w, p in _rows(central_db, PACKED_INDEXES) if p]
    assert len(packed) == 2
    open_week = partition_name(week_start(NOW))
    assert open_week not in packed
    late = measurement(2, old[0] + timedelta(hours=1))
    assert (await post_batch(customer_token, "measurements", [late])).status == 200
    assert _rows(central_db, "SELECT count(*) FROM fleet.power_measurements") == [(61,)]


# --- property: the aggregate equals a brute-force recomputation from the raw rows ---------------

_DEVICES = st.integers(min_value=1, max_value=3)
_MINUTES = st.one_of(
    st.integers(min_value=0, max_value=6 * 60),  # the last hours
    st.integers(min_value=90 * 1440, max_value=90 * 1440 + 180),  # a 90-day-old back-fill
    st.integers(min_value=400 * 1440, max_value=400 * 1440 + 60),  # a 400-day-old back-fill
)
_VALUE = st.one_of(
    st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: round(x, 3))
)
_SAMPLE = st.tuples(_DEVICES, _MINUTES, _VALUE, _VALUE)
_BATCHES = st.lists(st.lists(_SAMPLE, min_size=1, max_size=30), min_size=1, max_size=6)
_BASE = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)


def _brute_force(raw: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for time, device_id, p_total, energy in raw:
        groups[(time.astimezone(UTC).replace(minute=0, second=0, microsecond=0), device_id)].append(
            (time, p_total, energy)
        )
    out = {}
    for key, samples in groups.items():
        samples.sort()
        powers = [p for _, p, _ in samples if p is not None]
        energy = [e for _, _, e in samples if e is not None]
        steps = [b - a if b >= a else max(b, 0.0) for a, b in itertools.pairwise(energy)]
        out[key] = {
            "samples": len(samples),
            "p_total_avg": sum(powers) / len(powers) if powers else None,
            "p_total_min": min(powers) if powers else None,
            "p_total_max": max(powers) if powers else None,
            "energy_first": energy[0] if energy else None,
            "energy_last": energy[-1] if energy else None,
            "energy_increase": sum(steps) if energy else None,
            "energy_resets": sum(b < a for a, b in itertools.pairwise(energy)) if energy else None,
        }
    return out


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def _check_against_raw(dsn: str) -> None:
    raw = _rows(
        dsn, "SELECT time, device_id, p_total, energy_imp_kwh FROM fleet.power_measurements"
    )
    expected = _brute_force(raw)
    got = {
        (r[0], r[1]): {
            "samples": r[2],
            "p_total_avg": r[3],
            "p_total_min": r[4],
            "p_total_max": r[5],
            "energy_first": r[6],
            "energy_last": r[7],
            "energy_increase": r[8],
            "energy_resets": r[9],
        }
        for r in _rows(
            dsn,
            """SELECT bucket, device_id, samples, p_total_avg, p_total_min, p_total_max,
                      (energy_imp_kwh_counter).first_value, (energy_imp_kwh_counter).last_value,
                      (energy_imp_kwh_counter).increase, (energy_imp_kwh_counter).resets
               FROM fleet.hourly_per_device""",
        )
    }
    assert set(got) == set(expected)
    for key, want in expected.items():
        for column, value in want.items():
            assert _close(got[key][column], value), (key, column, got[key][column], value)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=_BATCHES,
    refresh_after=st.lists(st.booleans(), min_size=6, max_size=6),
    resend=st.booleans(),
)
def test_hourly_aggregate_matches_brute_force(
    threaded_ingestd: ThreadedIngestd,
    customer_token: str,
    central_db: str,
    batches: list[list[tuple[int, int, float | None, float | None]]],
    refresh_after: list[bool],
    resend: bool,
) -> None:
    """Over random batches with back-fills, duplicates and re-deliveries, the hourly aggregate
    (counts, power statistics, the register's counter summary) equals a brute-force recomputation
    from the raw rows: always on plain PostgreSQL (hours not yet
    rolled up are computed at read time), and after each refresh cycle on TimescaleDB."""
    plain = _mode(central_db) is StorageMode.POSTGRESQL
    with psycopg.connect(central_db, autocommit=True) as conn:
        conn.execute("TRUNCATE fleet.power_measurements_scaled, fleet.hourly_dirty")
        if plain:
            conn.execute("TRUNCATE fleet.hourly_rollup")
        else:  # forget what the previous example materialized
            conn.execute("CALL refresh_continuous_aggregate('fleet.hourly_per_device', NULL, NULL)")
    settings_ = threaded_ingestd.settings
    sent: list[list[dict[str, Any]]] = []
    for number, batch in enumerate(batches):
        items = [
            measurement(
                device, _BASE - timedelta(minutes=minutes), p_total=p_total, energy_imp_kwh=energy
            )
            for device, minutes, p_total, energy in batch
        ]
        sent.append(items)
        status, body = threaded_ingestd.post(customer_token, "measurements", items)
        assert status == 200, body
        assert body["rejected"] == 0
        if refresh_after[number]:
            threaded_ingestd.call(_cycle(settings_))
            _check_against_raw(central_db)
        elif plain:
            _check_against_raw(central_db)
    if resend:
        for items in sent:
            status, body = threaded_ingestd.post(customer_token, "measurements", items)
            assert (status, body["accepted"]) == (200, 0)
    keys = {(item["device_id"], item["time"]) for items in sent for item in items}
    assert _rows(central_db, "SELECT count(*) FROM fleet.power_measurements") == [(len(keys),)]
    threaded_ingestd.call(_cycle(settings_))
    _check_against_raw(central_db)


async def test_many_rows_in_one_batch_across_weeks(
    post_batch: PostBatch, customer_token: str, central_db: str
) -> None:
    """A 5,000-row batch spread over three weeks is stored whole."""
    rows = measurements(5000, devices=10, start=NOW - timedelta(days=20))
    for i, row in enumerate(rows):
        row["time"] = (NOW - timedelta(days=20) + timedelta(minutes=6 * i)).isoformat()
    resp = await post_batch(customer_token, "measurements", rows)
    assert (await resp.json())["accepted"] == 5000
    assert _rows(central_db, "SELECT count(*) FROM fleet.power_measurements") == [(5000,)]


def test_switching_paths_is_refused_with_a_reason(central_db: str) -> None:
    """A database bootstrapped on one path is not silently converted to the other."""
    from ingestd.storage import BootstrapError

    from tests.fix_pg import TIMESCALEDB

    mode = _mode(central_db)
    if mode is StorageMode.POSTGRESQL and not TIMESCALEDB:
        pytest.skip("needs TimescaleDB installed to try the other path")
    other = "on" if mode is StorageMode.POSTGRESQL else "off"
    if other == "off":
        # A hypertable stays a hypertable: "off" only skips creating TimescaleDB objects.
        pytest.skip("switching TimescaleDB off on a hypertable is not attempted by the bootstrap")
    with pytest.raises(BootstrapError, match="manual migration"):
        asyncio.run(bootstrap_database(central_db, StoragePlan(timescaledb=other)))
