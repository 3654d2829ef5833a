"""The few Prometheus pieces the pusher needs, written here instead of imported.

prometheus_client's package imports its HTTP servers and push-gateway client with it
(http.server, urllib.request, wsgiref, html: ~2.6 MiB of a gateway's memory, for code the
pusher never runs: its listener is `scrape.py`). What the pusher uses is small: counters and
gauges with fixed label sets, an info series, collectors computed at scrape time, the process
series, and the two text formats a scraper asks for. They are written the way prometheus_client
writes them (same names, HELP and TYPE lines, label order, number formatting: a page scraped
from a pusher reads the same as before; tests/pusher/test_prom.py compares the two).

Values are updated from the daemon's event loop and read by the scrape on the same loop; a lock
per value keeps an update from a worker thread whole all the same.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "OPENMETRICS_TYPE",
    "TEXT_TYPE",
    "Counter",
    "Family",
    "Gauge",
    "Info",
    "Registry",
    "Sample",
    "choose_format",
    "gzip_accepted",
    "openmetrics",
    "process_families",
    "text",
]

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(slots=True)
class Family:
    """One metric family as it is exposed: `name` without `_total` (counter) or `_info` (info),
    `kind` one of counter, gauge, info."""

    name: str
    documentation: str
    kind: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, labels: Iterable[tuple[str, str]], value: float) -> None:
        suffix = {"counter": "_total", "info": "_info"}.get(self.kind, "")
        self.samples.append(Sample(self.name + suffix, tuple(labels), float(value)))


Collector = Callable[[], Iterable[Family]]


class Registry:
    """The series of one pusher, in registration order (never a process-wide registry)."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []

    def register(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def collect(self) -> Iterator[Family]:
        for collector in self._collectors:
            yield from collector()


class _Value:
    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def set(self, value: float) -> None:
        with self._lock:
            self.value = float(value)


class _Metric:
    kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        *,
        registry: Registry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Value] = {}
        if not self.labelnames:
            self._children[()] = _Value()
        registry.register(self._collect)

    def _child(self, values: tuple[str, ...]) -> _Value:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, given {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children.setdefault(values, _Value())
        return child

    def get(self, *values: str) -> float:
        """The value of the series with these label values (0 before its first update)."""
        child = self._children.get(tuple(values))
        return child.value if child is not None else 0.0

    def _collect(self) -> Iterator[Family]:
        family = Family(self.name, self.documentation, self.kind)
        for values, child in list(self._children.items()):
            family.add(zip(self.labelnames, values, strict=True), child.value)
        yield family


class Counter(_Metric):
    """A counter; `name` without `_total` (exposed with it)."""

    kind = "counter"

    def labels(self, *values: str) -> _CounterChild:
        return _CounterChild(self._child(tuple(values)))

    def inc(self, amount: float = 1.0) -> None:
        _CounterChild(self._child(())).inc(amount)


class _CounterChild:
    __slots__ = ("_value",)

    def __init__(self, value: _Value) -> None:
        self._value = value

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self._value.inc(amount)


class Gauge(_Metric):
    kind = "gauge"

    def labels(self, *values: str) -> _Value:
        return self._child(tuple(values))

    def set(self, value: float) -> None:
        self._child(()).set(value)

    def inc(self, amount: float = 1.0) -> None:
        self._child(()).inc(amount)


class Info:
    """A constant series `<name>_info{…} 1`."""

    def __init__(self, name: str, documentation: str, *, registry: Registry) -> None:
        self._family = Family(name, documentation, "info")
        registry.register(lambda: [self._family])

    def info(self, labels: dict[str, str]) -> None:
        self._family.samples.clear()
        self._family.add(sorted(labels.items()), 1.0)


def _proc_stat() -> list[str]:
    with open("/proc/self/stat", "rb") as f:
        # The fields after the command (which may hold spaces) in parentheses.
        return f.read().rpartition(b")")[2].decode().split()


def _boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _max_fds() -> float | None:
    with open("/proc/self/limits", "rb") as f:
        for line in f:
            if line.startswith(b"Max open files"):
                return float(line.split()[3])
    return None


def process_families() -> list[Family]:
    """prometheus_client's `process_*` series from /proc (none where there is no /proc)."""
    try:
        stat = _proc_stat()
        ticks = os.sysconf("SC_CLK_TCK")
        page = os.sysconf("SC_PAGESIZE")
        start = _boot_time() + float(stat[19]) / ticks
        max_fds = _max_fds()
        open_fds = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError):
        return []
    series = [
        ("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", float(stat[20])),
        ("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge",
         float(stat[21]) * page),
        ("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
         "gauge", start),
        ("process_cpu_seconds", "Total user and system CPU time spent in seconds.", "counter",
         (float(stat[11]) + float(stat[12])) / ticks),
        ("process_open_fds", "Number of open file descriptors.", "gauge", float(open_fds)),
    ]  # fmt: skip
    if max_fds is not None:
        series.append(
            ("process_max_fds", "Maximum number of open file descriptors.", "gauge", max_fds)
        )
    families = []
    for name, documentation, kind, value in series:
        family = Family(name, documentation, kind)
        family.add((), value)
        families.append(family)
    return families


def _number(value: float) -> str:
    """A value as Go writes it (prometheus_client's floatToGoString): 7.0, 1.234567e+06, +Inf."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    s = repr(value)
    dot = s.find(".")
    if value > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escaped(value: str, *, quote: bool) -> str:
    value = value.replace("\\", r"\\").replace("\n", r"\n")
    return value.replace('"', r"\"") if quote else value


def _sample_line(sample: Sample) -> str:
    labels = ""
    if sample.labels:
        pairs = ",".join(f'{k}="{_escaped(v, quote=True)}"' for k, v in sorted(sample.labels))
        labels = "{" + pairs + "}"
    return f"{sample.name}{labels} {_number(sample.value)}\n"


def text(registry: Registry) -> bytes:
    """The page in Prometheus' text format 0.0.4 (counters' HELP and TYPE under `_total`, info
    series as gauges)."""
    out: list[str] = []
    for family in registry.collect():
        name, kind = family.name, family.kind
        if kind == "counter":
            name += "_total"
        elif kind == "info":
            name, kind = name + "_info", "gauge"
        out.append(f"# HELP {name} {_escaped(family.documentation, quote=False)}\n")
        out.append(f"# TYPE {name} {kind}\n")
        out.extend(map(_sample_line, family.samples))
    return "".join(out).encode()


def openmetrics(registry: Registry) -> bytes:
    """The page in OpenMetrics 1.0.0 text, ending with `# EOF`."""
    out: list[str] = []
    for family in registry.collect():
        out.append(f"# HELP {family.name} {_escaped(family.documentation, quote=True)}\n")
        out.append(f"# TYPE {family.name} {family.kind}\n")
        out.extend(map(_sample_line, family.samples))
    out.append("# EOF\n")
    return "".join(out).encode()


def choose_format(accept: str) -> tuple[Callable[[Registry], bytes], str]:
    """(writer, Content-Type) for a scraper's `Accept`: OpenMetrics when it lists it, text
    0.0.4 otherwise (as prometheus_client chooses for names that need no escaping)."""
    for accepted in accept.split(","):
        if accepted.split(";")[0].strip() == "application/openmetrics-text":
            return openmetrics, OPENMETRICS_TYPE
    return text, TEXT_TYPE


def gzip_accepted(accept_encoding: str) -> bool:
    return any(part.split(";")[0].strip().lower() == "gzip" for part in accept_encoding.split(","))
