"""The exactly-once checker: what the customer committed against what the centre holds.

Per device, the set of (device_id, time) keys committed in the customer database
(`monitoring.power_measurements`) must equal the keys stored centrally for that customer
(`fleet.power_measurements`) plus those kept as dead letters (`fleet.rejected_rows`, refused
by validation, e.g. a sample too far in the future) plus those quarantined locally
(`app.fleet_push_quarantine`, refused by size even alone). A committed key in none of them is
*lost*; a key both stored and dead-lettered or quarantined, or a central row past its distinct
key, is *duplicated*; a central key the customer never committed is *extra*.

For information only: `duplicate_deliveries` sums the `duplicates` ingestd reported
(re-sends after a lost answer: harmless, the first delivery wins), and
`dead_letter_redeliveries` counts dead-letter rows beyond one per key (a re-sent batch with a
rejected row is dead-lettered again: the dead-letter table keeps every delivery).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

__all__ = ["CheckReport", "DeviceReport", "check", "newest_key"]

Key = tuple[int, datetime | str]

# A time Python cannot hold (±infinity, BC, year 10000 on) comes back as its text instead.
_TIME = (
    "CASE WHEN time >= '0001-01-01 00:00:00+00' AND time < '10000-01-01 00:00:00+00' "
    "THEN time END, time::text"
)
LOCAL_KEYS = f"SELECT device_id, {_TIME} FROM monitoring.power_measurements"
QUARANTINED_KEYS = (
    f"SELECT device_id, {_TIME} FROM app.fleet_push_quarantine "
    "WHERE resource = 'measurements' AND device_id IS NOT NULL"
)
NEWEST_LOCAL_KEY = (
    f"SELECT device_id, {_TIME} FROM monitoring.power_measurements "
    "ORDER BY push_xid DESC, device_id DESC, time DESC LIMIT 1"
)
CUSTOMER_ID = "SELECT id FROM fleet.customers WHERE code = %s"
CENTRAL_KEYS = "SELECT device_id, time FROM fleet.power_measurements WHERE customer_id = %s"
CENTRAL_ROWS = "SELECT count(*) FROM fleet.power_measurements WHERE customer_id = %s"
DEAD_LETTERS = (
    "SELECT payload FROM fleet.rejected_rows WHERE customer_id = %s AND batch_type = 'measurements'"
)
DUPLICATE_DELIVERIES = (
    "SELECT coalesce(sum(duplicates), 0) FROM fleet.ingest_events "
    "WHERE customer_id = %s AND batch_type = 'measurements'"
)


@dataclass
class DeviceReport:
    device_id: int
    committed: int = 0
    arrived: int = 0
    dead_lettered: int = 0
    quarantined: int = 0
    lost: int = 0
    duplicated: int = 0
    extra: int = 0


@dataclass
class CheckReport:
    devices: dict[int, DeviceReport] = field(default_factory=dict)
    central_rows: int = 0
    duplicate_deliveries: int = 0
    dead_letter_redeliveries: int = 0
    unreadable_dead_letters: int = 0
    lost_keys: list[Key] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(getattr(d, name) for d in self.devices.values())

    @property
    def committed(self) -> int:
        return self.total("committed")

    @property
    def arrived(self) -> int:
        return self.total("arrived")

    @property
    def lost(self) -> int:
        return self.total("lost")

    @property
    def duplicated(self) -> int:
        return self.total("duplicated") + self.central_rows - self.arrived

    @property
    def extra(self) -> int:
        return self.total("extra")

    def summary(self) -> str:
        return (
            f"committed {self.committed}, arrived {self.arrived}, "
            f"dead-lettered {self.total('dead_lettered')}, quarantined {self.total('quarantined')}, "
            f"lost {self.lost}, duplicated {self.duplicated}, extra {self.extra}, "
            f"duplicate deliveries {self.duplicate_deliveries}, "
            f"dead-letter re-deliveries {self.dead_letter_redeliveries}"
            + (f", first lost {self.lost_keys[:3]}" if self.lost_keys else "")
        )


def _dead_letter_key(payload: str) -> Key | None:
    try:
        row = json.loads(payload)
        return int(row["device_id"]), datetime.fromisoformat(row["time"])
    except (ValueError, KeyError, TypeError):
        return None


def newest_key(customer_dsn: str) -> Key | None:
    """The last committed row in cursor order: once it is accounted for, so is every row the
    pusher will ever send."""
    with psycopg.connect(
        customer_dsn, autocommit=True, connect_timeout=10, options="-c TimeZone=UTC"
    ) as conn:
        row = conn.execute(NEWEST_LOCAL_KEY).fetchone()
    return (int(row[0]), row[1] or row[2]) if row else None


def check(customer_dsn: str, central_dsn: str, customer_code: str) -> CheckReport:
    """Compare the customer's committed keys with the centre's, device by device."""
    with psycopg.connect(
        customer_dsn, autocommit=True, connect_timeout=10, options="-c TimeZone=UTC"
    ) as conn:
        local: set[Key] = {(int(d), t or text) for d, t, text in conn.execute(LOCAL_KEYS)}
        quarantined: set[Key] = {
            (int(d), t or text) for d, t, text in conn.execute(QUARANTINED_KEYS)
        }
    with psycopg.connect(central_dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(CUSTOMER_ID, (customer_code,)).fetchone()
        if row is None:
            raise LookupError(f"no customer {customer_code!r} in the central database")
        cid = row[0]
        central: set[Key] = {(int(d), t) for d, t in conn.execute(CENTRAL_KEYS, (cid,))}
        central_rows = int(conn.execute(CENTRAL_ROWS, (cid,)).fetchone()[0])  # type: ignore[index]
        payloads = [p for (p,) in conn.execute(DEAD_LETTERS, (cid,))]
        duplicate_deliveries = int(
            conn.execute(DUPLICATE_DELIVERIES, (cid,)).fetchone()[0]  # type: ignore[index]
        )
    report = CheckReport(central_rows=central_rows, duplicate_deliveries=duplicate_deliveries)
    dead_counts: Counter[Key] = Counter()
    for payload in payloads:
        key = _dead_letter_key(payload)
        if key is None:
            report.unreadable_dead_letters += 1
        else:
            dead_counts[key] += 1
    dead = set(dead_counts)
    report.dead_letter_redeliveries = sum(n - 1 for n in dead_counts.values())

    by_device: dict[int, DeviceReport] = defaultdict(lambda: DeviceReport(0))
    for key in local | central | dead | quarantined:
        device = by_device.setdefault(key[0], DeviceReport(key[0]))
        homes = (key in central) + (key in dead) + (key in quarantined)
        if key in local:
            device.committed += 1
            if homes == 0:
                device.lost += 1
                report.lost_keys.append(key)
        elif key in central:
            device.extra += 1
        device.arrived += key in central
        device.dead_lettered += key in dead
        device.quarantined += key in quarantined
        device.duplicated += max(0, homes - 1)
    report.devices = dict(sorted(by_device.items()))
    report.lost_keys.sort(key=str)
    return report
