"""ingestd CPU per gateway health report (issue 20): what a fleet's reports cost the centre.

    uv run python bench/health_report.py [--gateways 200] [--reports 3000]

A real `ingestd serve` on a throwaway cluster, `--gateways` customers each with its own token;
one client sends `--reports` zstd'd reports (the pusher's body, ~120 bytes), round-robin over
the gateways on one kept-alive connection, one at a time. ingestd's CPU (user + system, from
/proc) over the run divided by the reports is the figure, next to the wall time per report and
PostgreSQL's CPU per report. A report is one upsert (and a history row at most every 10 s per
gateway): the figure is mostly aiohttp, the token lookup (cached) and the decode.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common import (
    IngestdProcess,
    cpu_seconds,
    create_central_database,
    exit_on_sigterm,
    machine_info,
    postgres_cpu_seconds,
)
from fleetcore import HealthReport, ResourceHealth, encode_report, zstd_compress
from fleetcore.protocol import HEALTH_PATH
from fleetdev.pgcluster import temporary_cluster
from ingestd.customers import add_customer
from report import Figure, finish


def report_body(n: int) -> bytes:
    report = HealthReport(
        version="0.9.0",
        wire_format="columnar",
        started_at=int(time.time()) - 3600,
        push_interval_s=60.0,
        heartbeat_s=300.0,
        measurements=ResourceHealth(backlog_rows=27, lag_s=1.0 + n % 7),
        db_bytes=80_000_000,
        disk_free_bytes=20 * 2**30,
        clock_offset_s=-0.4,
        sent_bytes=1_000_000 + n,
        host="gw-bench",
    )
    return zstd_compress(encode_report(report))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument("--reports", type=int, default=3000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    with temporary_cluster(prefix="fleet-bench-health-") as cluster:
        central = create_central_database(cluster)
        tokens = [add_customer(central, f"GW{i:05d}") for i in range(args.gateways)]
        bodies = [report_body(i) for i in range(16)]
        with IngestdProcess(central, {"INGESTD_FLEET_STATE_INTERVAL_S": "3600"}) as ingestd:
            conn = http.client.HTTPConnection("127.0.0.1", ingestd.port, timeout=30)

            def send(i: int) -> None:
                body = bodies[i % len(bodies)]
                conn.request("POST", HEALTH_PATH, body=body, headers={
                    "X-Customer-Token": tokens[i % len(tokens)],
                    "Content-Type": "application/json", "Content-Encoding": "zstd",
                })  # fmt: skip
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"report answered {resp.status}")

            for i in range(min(args.reports, 2 * args.gateways)):  # warm-up: every token cached
                send(i)
            cpu0, pg0, t0 = (
                cpu_seconds(ingestd.pid),
                postgres_cpu_seconds(cluster),
                time.perf_counter(),
            )
            for i in range(args.reports):
                send(i)
            wall = time.perf_counter() - t0
            cpu = cpu_seconds(ingestd.pid) - cpu0
            pg = postgres_cpu_seconds(cluster) - pg0
            conn.close()
        results = {
            "machine": machine_info(central),
            "gateways": args.gateways,
            "reports": args.reports,
            "body_bytes": len(bodies[0]),
            "ingestd_cpu_us_per_report": round(cpu / args.reports * 1e6, 1),
            "postgres_cpu_us_per_report": round(pg / args.reports * 1e6, 1),
            "wall_ms_per_report": round(wall / args.reports * 1e3, 3),
        }
    figures = [
        Figure.of(
            "20. ingestd CPU per health report",
            f"{results['ingestd_cpu_us_per_report']} µs",
            f"PostgreSQL {results['postgres_cpu_us_per_report']} µs; wall "
            f"{results['wall_ms_per_report']} ms; {args.reports} reports of "
            f"{results['body_bytes']} B, {args.gateways} gateways",
        )
    ]
    finish("health_report", results, figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
