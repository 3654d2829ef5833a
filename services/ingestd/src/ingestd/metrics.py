"""Prometheus metrics of ingestd, served at GET /metrics by prometheus_client's aiohttp handler
(text format 0.0.4, or OpenMetrics when the scraper asks for it; gzip when accepted).

The fleet figures (`fleet_gateways…`, `fleet_meters`) come from the database, read every
INGESTD_FLEET_STATE_INTERVAL_S by `ingestd.fleetwatch`: every replica serves the same counts, so
rules aggregate them with `max`, never `sum`.

One registry per application (no process-wide singleton), so several apps in one process (tests)
keep separate counts. No label carries a customer code or anything secret; per-customer figures
live in the database (`fleet.ingest_events`) and the read API. Names follow Prometheus'
conventions (checked by tests/ingestd/test_metrics_conventions.py): no `_created` series.

    fleet_ingest_requests_total{batch_type,status}     every ingest answer, by HTTP status
    fleet_ingest_rows_total{batch_type,outcome}        accepted | duplicate | rejected rows
    fleet_ingest_request_duration_seconds{batch_type}  latency histogram of ingest requests
    fleet_ingest_payload_bytes{kind}                   wire | body (decompressed) size histogram
    fleet_ingest_auth_failures_total                   failed authentications (401)
    fleet_ingest_repair_rows_total{outcome}            rows of repair batches (X-Push-Repair),
                                                       also counted in fleet_ingest_rows_total
    fleet_ingest_digest_cells_total{result}            digest cells compared: equal | differing
    fleet_ingest_db_pool_connections{state}            idle | in_use connections (at scrape)
    fleet_ingest_db_pool_max_connections               the pool's ceiling (INGESTD_POOL_MAX_SIZE)
    fleet_ingest_db_pool_waiting_requests              requests waiting for a connection
    fleet_ingest_hourly_dirty_buckets                  hours waiting for the rollup (at scrape)
    fleet_ingest_admission_slots_in_use                batches holding a slot now (INGESTD_MAX_INFLIGHT)
    fleet_ingest_admission_waiting                     received batches waiting for a slot now
    fleet_ingest_admission_capacity_per_second         batches a second the process completes while
                                                       every slot is taken (measured, ingestd.admission)
    fleet_ingest_admission_booked_ahead_seconds        how far ahead the next free return time of a
                                                       refused batch is (its Retry-After, about)
    fleet_ingest_admission_refusals_total{reason}      503 busy: line_full | wait_timeout
    fleet_ingest_event_loop_lag_seconds                how late the event loop woke (ingestd.looplag)
    fleet_health_reports_total{outcome}                gateway health reports: stored | flagged | invalid
    fleet_gateways{state}                              gateways in each state (ingestd.fleetstate);
                                                       one gateway counts in each state it is in
    fleet_gateways_known                               gateways reporting with a live token
    fleet_gateway_versions{version}                    gateways per pusher version (top 20, `other`)
    fleet_gateway_quarantined_rows                     rows quarantined on all gateways together
    fleet_gateway_max_lag_seconds                      the worst measurements lag in the fleet
    fleet_gateway_min_disk_free_bytes                  the least free disk under a gateway's database
    fleet_meters{state}                                meters (devices) in each state
    fleet_state_updated_timestamp_seconds              when these fleet figures were last read
    fleet_build_info{service,version}                  1, labelled with the running version
    process_*                                          CPU, memory, file descriptors, start time
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ingestd.fleetstate import GATEWAY_STATES, METER_STATES

__all__ = ["IngestMetrics"]

if TYPE_CHECKING:
    from ingestd.admission import Admission
    from ingestd.fleetwatch import FleetFigures

# A `_created` twin of every counter doubles the page, and nothing here reads it.
disable_created_metrics()  # type: ignore[no-untyped-call]
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1e3, 1e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8)
_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _AdmissionCollector(Collector):
    """The admission's state at each scrape (`ingestd.admission`)."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        a = self._admission
        yield GaugeMetricFamily(
            "fleet_ingest_admission_slots_in_use",
            "Batches holding an admission slot now.",
            value=a.in_use,
        )
        yield GaugeMetricFamily(
            "fleet_ingest_admission_waiting",
            "Received batches waiting for an admission slot now.",
            value=a.waiting,
        )
        yield GaugeMetricFamily(
            "fleet_ingest_admission_capacity_per_second",
            "Batches a second this process completes while every slot is taken (measured).",
            value=a.returns.capacity_per_s,
        )
        yield GaugeMetricFamily(
            "fleet_ingest_admission_booked_ahead_seconds",
            "How far ahead the next free return time of a batch refused for capacity is.",
            value=a.returns.booked_ahead_s(),
        )
        refusals = CounterMetricFamily(
            "fleet_ingest_admission_refusals",
            "Batches refused for capacity (503 busy), by reason.",
            labels=["reason"],
        )
        for reason, count in a.refused.items():
            refusals.add_metric([reason], count)
        yield refusals


class _PoolCollector(Collector):
    def __init__(
        self, stats: Callable[[], dict[str, int]], dirty: Callable[[], int | None]
    ) -> None:
        self._stats = stats
        self._dirty = dirty

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        pool = GaugeMetricFamily(
            "fleet_ingest_db_pool_connections",
            "Database pool connections open now, by state.",
            labels=["state"],
        )
        pool.add_metric(["idle"], idle)
        pool.add_metric(["in_use"], max(0, size - idle))
        yield pool
        yield GaugeMetricFamily(
            "fleet_ingest_db_pool_max_connections",
            "The most connections the pool may open.",
            value=stats.get("pool_max", 0),
        )
        yield GaugeMetricFamily(
            "fleet_ingest_db_pool_waiting_requests",
            "Requests waiting for a pool connection now.",
            value=stats.get("requests_waiting", 0),
        )
        dirty = self._dirty()
        if dirty is not None:
            yield GaugeMetricFamily(
                "fleet_ingest_hourly_dirty_buckets",
                "hourly buckets waiting for the rollup",
                value=dirty,
            )


class _FleetCollector(Collector):
    """The fleet's figures as of the last fleet-state round (nothing before the first)."""

    def __init__(self, figures: FleetFigures) -> None:
        self._figures = figures

    def collect(self) -> Iterator[GaugeMetricFamily]:
        f = self._figures
        if f.updated is None:
            return
        gateways = GaugeMetricFamily(
            "fleet_gateways", "Gateways in each state (one may be in several).", labels=["state"]
        )
        for state in GATEWAY_STATES:
            gateways.add_metric([state], f.gateways.get(state, 0))
        yield gateways
        yield GaugeMetricFamily(
            "fleet_gateways_known", "Gateways reporting with a live token.", value=f.known
        )
        versions = GaugeMetricFamily(
            "fleet_gateway_versions", "Gateways per pusher version.", labels=["version"]
        )
        for name, count in f.versions.items():
            versions.add_metric([name], count)
        yield versions
        yield GaugeMetricFamily(
            "fleet_gateway_quarantined_rows",
            "Rows quarantined on the gateways, all together.",
            value=f.quarantined_rows,
        )
        yield GaugeMetricFamily(
            "fleet_gateway_max_lag_seconds", "The worst measurements lag.", value=f.max_lag_s
        )
        if f.min_disk_free_bytes is not None:
            yield GaugeMetricFamily(
                "fleet_gateway_min_disk_free_bytes",
                "The least free disk under a gateway's database.",
                value=f.min_disk_free_bytes,
            )
        meters = GaugeMetricFamily("fleet_meters", "Meters in each state.", labels=["state"])
        for state in METER_STATES:
            meters.add_metric([state], f.meters.get(state, 0))
        yield meters
        yield GaugeMetricFamily(
            "fleet_state_updated_timestamp_seconds",
            "When the fleet figures were last read.",
            value=f.updated,
        )


class IngestMetrics:
    """The application's metrics and the registry they live in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        ProcessCollector(registry=self.registry)
        Info(
            "fleet_build", "The running Fleet service and its version.", registry=self.registry
        ).info({"service": "ingestd", "version": version("fleet-ingestd")})
        self.requests = Counter(
            "fleet_ingest_requests",
            "ingest requests by answer",
            ["batch_type", "status"],
            registry=self.registry,
        )
        self.rows = Counter(
            "fleet_ingest_rows",
            "rows by outcome",
            ["batch_type", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fleet_ingest_request_duration_seconds",
            "Ingest request latency, from the body's arrival to the answer.",
            ["batch_type"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.payload = Histogram(
            "fleet_ingest_payload_bytes",
            "request body size",
            ["kind"],
            buckets=_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "fleet_ingest_auth_failures", "failed authentications", registry=self.registry
        )
        self.repair_rows = Counter(
            "fleet_ingest_repair_rows",
            "rows of batches re-sent by reconciliation, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.digest_cells = Counter(
            "fleet_ingest_digest_cells",
            "reconciliation digest cells compared, by result",
            ["result"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "fleet_ingest_event_loop_lag_seconds",
            "How much later than asked the event loop woke (every 50 ms).",
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self.health_reports = Counter(
            "fleet_health_reports",
            "gateway health reports by outcome",
            ["outcome"],
            registry=self.registry,
        )

    def watch_admission(self, admission: Admission) -> None:
        """Serve the admission's state (slots, waiting line, capacity, bookings, refusals)."""
        self.registry.register(_AdmissionCollector(admission))

    def watch_fleet(self, figures: FleetFigures) -> None:
        """Serve the fleet's figures (updated in place by `ingestd.fleetwatch`)."""
        self.registry.register(_FleetCollector(figures))

    def watch(
        self, pool_stats: Callable[[], dict[str, int]], dirty_buckets: Callable[[], int | None]
    ) -> None:
        """Report the pool's state and the rollup backlog at each scrape."""
        self.registry.register(_PoolCollector(pool_stats, dirty_buckets))

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once (labels() validates and locks each time: a
        small batch asked eight times)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    @staticmethod
    def _count(child: Any, n: int) -> None:
        """`child.inc(n)`, skipped for 0 (a batch's duplicates and rejections, nearly always):
        the series exists already (`_child`), and a locked add of nothing changes nothing."""
        if n:
            child.inc(n)

    def observe_request(self, batch_type: str, status: int, seconds: float) -> None:
        self._child(self.requests, batch_type, str(status)).inc()
        self._child(self.latency, batch_type).observe(seconds)

    def observe_batch(
        self,
        batch_type: str,
        accepted: int,
        duplicates: int,
        rejected: int,
        wire: int,
        body: int,
        *,
        repair: bool = False,
    ) -> None:
        if repair:
            self._count(self._child(self.repair_rows, "accepted"), accepted)
            self._count(self._child(self.repair_rows, "duplicate"), duplicates)
            self._count(self._child(self.repair_rows, "rejected"), rejected)
        self._count(self._child(self.rows, batch_type, "accepted"), accepted)
        self._count(self._child(self.rows, batch_type, "duplicate"), duplicates)
        self._count(self._child(self.rows, batch_type, "rejected"), rejected)
        self._child(self.payload, "wire").observe(wire)
        self._child(self.payload, "body").observe(body)
