"""The pusher's own Prometheus exposition (`pusher.ops.prom`) writes what prometheus_client wrote."""

from __future__ import annotations

import os

import prometheus_client as pc
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from pusher.ops import prom
from pusher.ops.metrics import PusherMetrics

VALUES = (0.0, 7.0, 0.25, 1234567.0, 1e-7, 123456789.5, float("inf"))


def _both() -> tuple[prom.Registry, pc.CollectorRegistry]:
    """The same series, with awkward label values, help texts and numbers, in both libraries."""
    ours, theirs = prom.Registry(), pc.CollectorRegistry(auto_describe=True)
    doc = 'Rows "shipped"\nwith a back\\slash.'
    prom.Info("fleet_build", "Build.", registry=ours).info({"version": "1.0", "service": "p"})
    pc.Info("fleet_build", "Build.", registry=theirs).info({"version": "1.0", "service": "p"})
    counters = (
        prom.Counter("demo_rows", doc, ["resource", "kind"], registry=ours),
        pc.Counter("demo_rows", doc, ["resource", "kind"], registry=theirs),
    )
    gauges = (
        prom.Gauge("demo_lag_seconds", "Lag.", registry=ours),
        pc.Gauge("demo_lag_seconds", "Lag.", registry=theirs),
    )
    for n, value in enumerate(VALUES):
        label = ('a"b\\c\nd', "x") if n == 1 else (f"r{n}", "y")
        for counter in counters:
            counter.labels(*label).inc(value)
    for gauge in gauges:
        gauge.set(-3.5)
    return ours, theirs


def _without_created(page: bytes) -> bytes:
    """prometheus_client's page without its `_created` series (the pusher has none; turning
    them off in prometheus_client is process-wide, so they are dropped here instead)."""
    lines = page.splitlines(keepends=True)
    return b"".join(line for line in lines if b"_created" not in line)


def test_pages_read_the_same_as_prometheus_client_wrote_them() -> None:
    """Text 0.0.4 and OpenMetrics pages are byte for byte prometheus_client's for the same
    counters, gauges and info series (escaping, label order, number formatting)."""
    ours, theirs = _both()
    assert prom.text(ours) == _without_created(generate_latest(theirs))
    assert prom.openmetrics(ours) == _without_created(generate_openmetrics(theirs))


def test_a_counter_only_goes_up_and_labels_must_match() -> None:
    """A negative increment and a wrong number of label values are refused; a series reads
    back what was added (0 before)."""
    counter = prom.Counter("demo", "Demo.", ["a"], registry=prom.Registry())
    assert counter.get("x") == 0
    counter.labels("x").inc(2.5)
    assert counter.get("x") == 2.5
    with pytest.raises(ValueError, match="only go up"):
        counter.labels("x").inc(-1)
    with pytest.raises(ValueError, match="labels"):
        counter.labels("x", "y")


def test_process_series_describe_this_process() -> None:
    """The process_* series carry this process's memory, start, CPU and descriptors."""
    registry = prom.Registry()
    registry.register(prom.process_families)
    found = {
        s.name: s.value
        for f in text_string_to_metric_families(prom.text(registry).decode())
        for s in f.samples
    }
    with open("/proc/self/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    assert abs(found["process_resident_memory_bytes"] - rss_kib * 1024) < 64 * 2**20
    assert found["process_virtual_memory_bytes"] >= found["process_resident_memory_bytes"]
    assert 0 < found["process_cpu_seconds_total"] < 1e6
    assert found["process_open_fds"] == pytest.approx(len(os.listdir("/proc/self/fd")), abs=3)
    assert found["process_max_fds"] >= found["process_open_fds"]
    assert found["process_start_time_seconds"] > 1.6e9


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("", prom.TEXT_TYPE),
        ("text/plain;version=0.0.4;q=0.5,*/*;q=0.1", prom.TEXT_TYPE),
        (
            "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;q=0.5",
            prom.OPENMETRICS_TYPE,
        ),
    ],
)
def test_the_format_is_the_one_the_scraper_accepts(accept: str, content_type: str) -> None:
    """OpenMetrics goes to a scraper that lists it, text 0.0.4 to any other."""
    assert prom.choose_format(accept)[1] == content_type


def test_gzip_only_when_accepted() -> None:
    """gzip is used when Accept-Encoding lists it (with or without a q value), not otherwise."""
    assert prom.gzip_accepted("br, GZIP;q=0.5")
    assert not prom.gzip_accepted("identity")
    assert not prom.gzip_accepted("")


def test_the_pusher_series_are_all_on_the_page() -> None:
    """Every series of a fresh pusher's registry parses, with process_* and fleet_build_info."""
    metrics = PusherMetrics()
    names = {f.name for f in text_string_to_metric_families(prom.text(metrics.registry).decode())}
    assert {
        "process_resident_memory_bytes",
        "fleet_build_info",
        "fleet_pusher_rows_shipped",
    } <= names


def test_large_values_are_written_as_go_writes_them() -> None:
    """A value of ten digits before the point is written with a two-digit exponent (Go's %g)."""
    registry = prom.Registry()
    prom.Counter("demo_bytes", "Bytes.", registry=registry).inc(12345678901.5)
    assert b"demo_bytes_total 1.23456789015e+10\n" in prom.text(registry)
