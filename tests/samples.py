"""Builders of protocol rows for tests: plausible values, overridable per field."""

from __future__ import annotations

import gzip as gzip_module
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

NOW = datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def site(site_id: int, **overrides: Any) -> dict[str, Any]:
    row = {
        "id": site_id,
        "name": f"Plant {site_id}",
        "timezone": "Europe/Amsterdam",
        "address": f"Street {site_id}",
        "updated_at": iso(NOW),
    }
    row.update(overrides)
    return row


def device(device_id: int, site_id: int = 1, **overrides: Any) -> dict[str, Any]:
    row = {
        "id": device_id,
        "site_id": site_id,
        "serial_number": f"AW21-{device_id:04d}",
        "model": "Acuvim IIR",
        "name": f"Feeder {device_id}",
        "updated_at": iso(NOW),
    }
    row.update(overrides)
    return row


def measurement(device_id: int, when: datetime, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "device_id": device_id,
        "time": iso(when),
        "received_at": iso(NOW),
        "v1": 230.1, "v2": 229.8, "v3": 231.0,
        "v12": 398.5, "v23": 398.0, "v31": 399.1,
        "i1": 12.5, "i2": 11.9, "i3": 12.2, "i_n": 0.4,
        "p1": 2.8, "p2": 2.7, "p3": 2.8, "p_total": 8.3,
        "q_total": 1.1, "s_total": 8.4, "pf_total": 0.98, "freq": 50.01,
        "energy_imp_kwh": 12345.6, "energy_exp_kwh": 12.0,
        "energy_q_imp_kvarh": 456.7, "energy_q_exp_kvarh": 3.2,
        "thd_v": 2.1, "thd_i": 5.4,
    }  # fmt: skip
    row.update(overrides)
    return row


def measurements(
    count: int, devices: int = 5, start: datetime | None = None
) -> list[dict[str, Any]]:
    """`count` samples spread over `devices` devices, one per device per minute."""
    base = start or NOW - timedelta(days=1)
    return [
        measurement(i % devices + 1, base + timedelta(minutes=i // devices)) for i in range(count)
    ]


def encode(items: list[Any], *, gzip: bool = True) -> bytes:
    body = msgspec.json.encode({"items": items})
    return gzip_module.compress(body, 1) if gzip else body
