"""fleetcore.health: the report's size on the wire, its decoding and its plausibility checks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fleetcore import (
    HealthReport,
    ReportFormatError,
    ResourceHealth,
    decode_report,
    encode_report,
    implausible_fields,
    report_fields,
    zstd_compress,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _full() -> HealthReport:
    """Every field set, at sizes a struggling gateway reaches."""
    busy = ResourceHealth(
        backlog_rows=12_345_678,
        lag_s=86_399.9,
        oldest_unshipped_age_s=172_799.9,
        consecutive_failures=1234,
        last_error="connection",
    )
    return HealthReport(
        version="10.20.30.dev4+gabcdef0",
        wire_format="columnar",
        started_at=int(NOW.timestamp()) - 86400 * 400,
        push_interval_s=60.0,
        heartbeat_s=300.0,
        measurements=busy,
        sites=ResourceHealth(consecutive_failures=17, last_error="503"),
        devices=ResourceHealth(consecutive_failures=17, last_error="503"),
        quarantined_rows=98_765,
        blocking_age_s=45_678.9,
        db_bytes=123_456_789_012,
        disk_free_bytes=987_654_321_098,
        clock_offset_s=-612.3,
        upload_cap=125_000,
        sent_bytes=9_876_543_210_987,
        host="gateway-customer-0001.site-042.example.internal",
    )


def test_a_full_report_stays_under_300_bytes_compressed() -> None:
    """A report with every field set compresses (zstd, as the pusher sends it) to at most 300
    bytes, and a healthy one leaves its zero fields out."""
    assert len(zstd_compress(encode_report(_full()))) <= 300
    quiet = HealthReport(version="1.0.0", wire_format="json", started_at=1, push_interval_s=60,
                         heartbeat_s=300)  # fmt: skip
    assert encode_report(quiet) == b'{"v":"1.0.0","w":"json","st":1,"pi":60,"hb":300}'


def test_round_trip_and_readable_names() -> None:
    """A report decodes to what was encoded; report_fields names every value readably."""
    report = _full()
    assert decode_report(encode_report(report)) == report
    fields = report_fields(report)
    assert fields["resources"]["measurements"]["backlog_rows"] == 12_345_678  # type: ignore[index]
    assert fields["clock_offset_s"] == -612.3


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b"[]", "object"),
        (b'{"v":"1","w":"json","st":1,"pi":1,"hb":1,"q":-1}', "$.q"),
        (b'{"v":"1 0","w":"json","st":1,"pi":1,"hb":1}', "$.v"),
        (b'{"w":"json","st":1,"pi":1,"hb":1}', "v"),
        (b"\xff\xfe", "JSON"),
        (b'{"v":"' + b"1" * 3000 + b'"}', "2048"),
    ],
)
def test_malformed_reports_are_refused_naming_the_field(body: bytes, mentions: str) -> None:
    """Whatever is not a report raises ReportFormatError, whose detail points at the problem."""
    with pytest.raises(ReportFormatError) as caught:
        decode_report(body)
    assert mentions in caught.value.detail and caught.value.code == "invalid_report"


def test_implausible_values_are_named() -> None:
    """A clock offset of years, a start in the future, a lag of a century and a petabyte-scale
    disk are named; a plausible report names nothing."""
    assert implausible_fields(_full(), NOW) == []
    wild = HealthReport(
        version="1.0.0",
        wire_format="json",
        started_at=int(NOW.timestamp()) + 7 * 86400,
        push_interval_s=60,
        heartbeat_s=300,
        measurements=ResourceHealth(lag_s=100 * 365 * 86400.0),
        clock_offset_s=3 * 365 * 86400.0,
        disk_free_bytes=2**60,
    )
    assert implausible_fields(wild, NOW) == [
        "clock_offset_s",
        "started_at",
        "measurements.lag_s",
        "disk_free_bytes",
    ]
