"""The exactly-once checker counts what it must: lost, dead-lettered, quarantined, extra."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from ingestd.customers import add_customer

from tests.chaos.checker import check

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)


def test_checker_sorts_every_key_into_its_place(customer_db: str, central_db: str) -> None:
    """Of 5 committed keys: 2 stored, 1 dead-lettered (twice), 1 quarantined, 1 lost; a central
    key never committed is extra, and the duplicates of ingest_events are summed."""
    add_customer(central_db, "CHK")
    keys = [(1, T0 + timedelta(seconds=s)) for s in range(5)]
    with psycopg.connect(customer_db) as conn:
        for device_id, when in keys:
            conn.execute(
                "INSERT INTO monitoring.power_measurements (device_id, time) VALUES (%s, %s)",
                (device_id, when),
            )
        conn.execute(
            "INSERT INTO app.fleet_push_quarantine (resource, device_id, time, payload, reason) "
            "VALUES ('measurements', 1, %s, '{}', 'too large')",
            (keys[3][1],),
        )
    with psycopg.connect(central_db) as conn:
        cid = conn.execute("SELECT id FROM fleet.customers WHERE code = 'CHK'").fetchone()[0]  # type: ignore[index]
        for device_id, when in [keys[0], keys[1], (2, T0)]:
            conn.execute(
                "INSERT INTO fleet.power_measurements (customer_id, device_id, time, received_at) "
                "VALUES (%s, %s, %s, now())",
                (cid, device_id, when),
            )
        payload = json.dumps({"device_id": 1, "time": keys[2][1].isoformat()})
        for _ in range(2):
            conn.execute(
                "INSERT INTO fleet.rejected_rows (customer_id, batch_id, batch_type, row_index, "
                "reason, payload) VALUES (%s, %s, 'measurements', 0, 'future', %s)",
                (cid, uuid.uuid4(), payload),
            )
    report = check(customer_db, central_db, "CHK")
    assert (report.committed, report.arrived, report.lost, report.extra) == (5, 3, 1, 1)
    assert (report.total("dead_lettered"), report.total("quarantined")) == (1, 1)
    assert report.dead_letter_redeliveries == 1
    assert report.duplicated == 0
    assert report.lost_keys == [keys[4]]
