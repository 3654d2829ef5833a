"""A small batch's fixed costs, part by part, in one process (issue 26 item 1).

    uv run python bench/request_parts.py [--reps 30] [--requests 200]

`bench/fleet.py --capacity` reads ingestd's whole CPU per request from /proc; a profiler's shares
of it count a thread preempted by PostgreSQL on a shared core as busy. This times, with
`time.process_time()`, the parts of `POST /api/fleet/ingest` that run without the network or the
database, on a gateway's minute as the fleet bench's generator sends it (27 meters, one tick;
`bodies.ValuePool`), the parts taking turns so a busy machine slows them alike:

  decode json        a gzip JSON body to validated columns on the event loop (`_decode_small`)
  decode columnar    the same samples as a columnar body as the pusher sends it (raw when zstd
                     would not make it smaller, as for a 27-row minute; `fleetcore.columnar_small`)
  dirty buckets      the hours the batch marks (`StorageState.buckets`, plain PostgreSQL)
  parameters         the one statement's parameters: the audit row's, the columns as binary
                     arrays split into integer steps (`writes._array_params`), the marks
  query conversion   psycopg's `%(name)s` to `$n` and the parameters' dumping, before sending
  log line           the canonical `batch` line (structlog through logging, JSON, to /dev/null)
  metrics            `IngestMetrics.observe_batch`
  token hash         `fleetcore.hash_token` (the cache is a dict lookup after it)
  answer             the 200 answer's JSON and aiohttp response object

Prints µs per request (first quartile and median of `--reps`, each the mean of `--requests`).
What is not here — aiohttp's request parsing and response writing, asyncio's loop, libpq's send
and receive, the pool's checkout, the admission and memory bookkeeping — is the rest of
`fleet.py`'s /proc figure. Results go to bench/results/request_parts-<time>.json (or --json).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bodies import ValuePool, body_headers
from fleetcore import BatchType, ParsedColumns, ValidationWindow, generate_token, hash_token
from fleetcore.answers import IngestAnswer
from fleetservice import configure_logging
from ingestd.body import BodyFormat
from ingestd.decoding import DecodeLimits, WireBody, _decode_small
from ingestd.handlers.http import json_answer
from ingestd.metrics import IngestMetrics
from ingestd.storage.audit import AuditRecord, event_params
from ingestd.storage.binary_arrays import bigint_array
from ingestd.storage.bootstrap import StorageMode, StoragePlan
from ingestd.storage.state import StorageState
from ingestd.storage.writes import INSERT_SMALL_BATCH, _array_params
from psycopg._queries import PostgresQuery
from psycopg.adapt import Transformer
from report import Figure, finish
from simulator import build_gateways

WINDOW = ValidationWindow(datetime.now(UTC), timedelta(days=3650), timedelta(days=1))


def _bodies(meters: int) -> dict[str, bytes]:
    gateway = build_gateways(["t"], 60, (meters, meters), random.Random(1))[0]
    tick = [(5, datetime.now(UTC).replace(microsecond=0))]
    return {
        "json": ValuePool().measurements(gateway, tick),
        "columnar": ValuePool(columnar=True).measurements(gateway, tick),
    }


def _decode(body: bytes, encoding: str) -> ParsedColumns:
    limits = DecodeLimits(64 << 20, time.monotonic() + 600, 60, 1)
    coding = body_headers(encoding, body).get("Content-Encoding", "identity")
    decoded = _decode_small(
        WireBody(bytearray(body)),
        BodyFormat(encoding == "columnar", coding),
        BatchType.MEASUREMENTS,
        WINDOW,
        limits,
    )
    assert decoded is not None and isinstance(decoded.parsed, ParsedColumns)
    return decoded.parsed


def _parts(meters: int) -> dict[str, Callable[[], Any]]:
    bodies = _bodies(meters)
    parsed = _decode(bodies["json"], "json")
    storage = StorageState(StorageMode.POSTGRESQL, StoragePlan())
    audit = AuditRecord(
        batch_id=uuid.uuid4(), customer_id=7, batch_type="measurements", wire_bytes=4000,
        body_bytes=12000, duration_ms=3.2, outcome="ok", status=200, accepted=0, duplicates=0,
        rejected=0, client_cursor="c" * 30, min_time=parsed.first_time, max_time=parsed.last_time,
        repair=False,
    )  # fmt: skip
    devices, hours = storage.buckets(parsed)

    def parameters() -> dict[str, Any]:
        params = event_params(audit, True)
        params.update(_array_params(parsed.valid))
        params["rows"] = parsed.valid.rows
        params["dirty_devices"] = bigint_array(devices)
        params["dirty_hours"] = bigint_array(hours)
        return params

    params = parameters()
    metrics = IngestMetrics()
    token = generate_token()
    log = _json_logger()
    return {
        "decode json": lambda: _decode(bodies["json"], "json"),
        "decode columnar": lambda: _decode(bodies["columnar"], "columnar"),
        "dirty buckets": lambda: storage.buckets(parsed),
        "parameters": parameters,
        "query conversion": lambda: PostgresQuery(Transformer()).convert(
            INSERT_SMALL_BATCH, params
        ),
        "log line": lambda: log.info(
            "batch",
            batch_id=str(audit.batch_id),
            batch_type="measurements",
            status=200,
            accepted=27,
            duplicates=0,
            rejected=0,
            wire_bytes=4000,
            body_bytes=12000,
            repair=False,
            duration_ms=3.21,
        ),
        "metrics": lambda: metrics.observe_batch("measurements", 27, 0, 0, 4000, 12000),
        "token hash": lambda: hash_token(token),
        "answer": lambda: json_answer(
            IngestAnswer(
                batch_type="measurements",
                batch_id=str(audit.batch_id),
                accepted=27,
                duplicates=0,
                rejected=0,
                errors=[],
            )
        ),
    }


def _json_logger() -> Any:
    """ingestd's logging (JSON lines), its stdout sent to /dev/null."""
    import structlog

    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the bench
    configure_logging("json", "info", service="ingestd")
    return structlog.get_logger("ingestd")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200, help="calls per timed rep")
    parser.add_argument("--meters", type=int, default=27)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    out = sys.stdout
    parts = _parts(args.meters)
    samples: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(args.reps):
        for name, part in parts.items():
            started = time.process_time()
            for _ in range(args.requests):
                part()
            samples[name].append((time.process_time() - started) / args.requests * 1e6)
    sys.stdout = out
    figures = []
    for name, values in samples.items():
        q1 = sorted(values)[len(values) // 4]
        median = statistics.median(values)
        print(f"{name:18s} {q1:8.1f} us (median {median:.1f})", file=out)
        figures.append(
            Figure.of(f"small batch part: {name}", f"{q1:.1f} us", f"median {median:.1f}")
        )
    result = {
        "benchmark": "request_parts",
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "us_per_request": {
            name: {"q1": sorted(v)[len(v) // 4], "median": statistics.median(v)}
            for name, v in samples.items()
        },
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    finish("request_parts", result, figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
