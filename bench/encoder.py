"""Encoder benchmark: µs per row of the columnar encoding, numpy vs the standard library.

    uv run python bench/encoder.py [--rows 5000] [--batches 20] [--reps 5]

The pusher encodes with `fleetcore.columnar_stdlib` (no numpy on gateways); ingestd, the tests
and the other benches have `fleetcore.columnar` (numpy). Both are given the same batches of
plausible meter readings (`common.generate_measurements`: 100 meters, every value column, rows
ordered meter by meter as the pusher sends them), each from the form it takes as input (numpy
arrays, or Python lists as the pusher has them after parsing the customer database's records),
and must give the same bytes. The figure is the best of `--reps` passes over all batches,
divided by the rows, plus the uncompressed and zstd body size per row (load-independent).

Then the pusher's whole path on a gateway, from the customer database's binary records (as
`source/columns.py` reads them: cursor order, a NULL in one value of every seventh row) to the
body (`columns_stdlib.batch_from_records`, checked against `columns_numpy`'s): its µs per row,
and its **Python peak per batch** (tracemalloc's, load-independent): the Python objects a batch
brings into being at once, which stay in the interpreter's object arenas as RSS after it
(docs/CAPACITY.md, "The pusher's own footprint on the gateway").
Results go to bench/results/encoder-<time>.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetcore import PushCursor, zstd_compress
from fleetcore.columnar import MeasurementColumns, columns_from_rows, encode_columns
from fleetcore.columnar_stdlib import PlainColumn, encode_plain_columns
from pusher.source.columns import CHUNK_ROWS
from pusher.source.columns_numpy import batch_from_records as pusher_numpy
from pusher.source.columns_stdlib import batch_from_records as pusher_stdlib
from pusher.source.records import RECORD
from report import Figure, finish
from rows import MeasurementTuple, generate_measurements, measurement_items


def _plain(batch: MeasurementColumns) -> dict[str, PlainColumn]:
    return {
        name: PlainColumn(c.values.tolist(), None if c.nulls is None else c.nulls.tolist())
        for name, c in batch.columns.items()
    }


def _best_us_per_row(encode: Any, batches: list[Any], rows: int, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        for batch in batches:
            encode(batch)
        best = min(best, time.perf_counter() - started)
    return best / rows * 1e6


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _micros(when: datetime) -> int:
    """PostgreSQL's timestamptz: µs since 2000-01-01."""
    return (when - _PG_EPOCH) // timedelta(microseconds=1)


def _records(samples: Sequence[MeasurementTuple], devices: int) -> bytes:
    """The samples as the pusher's columnar read fetches them: one fixed-size binary record each,
    in cursor order (one transaction per tick of all meters), value 2 NULL in every 7th row."""
    records = []
    for n, (when, device, received, *values) in enumerate(samples):
        mask = 0
        if n % 7 == 0:
            mask, values[1] = 1 << 1, 0.0
        xid = 1_000 + n // devices
        records.append(RECORD.pack(xid, device, _micros(when), _micros(received), mask, *values))
    return b"".join(records)


def _chunks(records: bytes) -> list[bytes]:
    """The records in the chunks the pusher reads them in (`columns.CHUNK_ROWS` each)."""
    size = CHUNK_ROWS * RECORD.size
    return [records[i : i + size] for i in range(0, len(records), size)]


def pusher_path(samples: Sequence[MeasurementTuple], rows: int, reps: int) -> dict[str, Any]:
    """The gateway's records-to-body path, from the records in the chunks they are read in: µs
    per row (best of `reps`), the Python peak of a batch over its records (tracemalloc, the
    largest of any batch) and whether numpy's path gives the same."""
    devices = 100
    batches = [_records(samples[i : i + rows], devices) for i in range(0, len(samples), rows)]
    counts = [len(b) // RECORD.size for b in batches]
    after = PushCursor.start()
    pairs = list(zip(batches, counts, strict=True))
    identical = all(
        pusher_stdlib(b, n, after, rows) == pusher_numpy(b, n, after, rows) for b, n in pairs
    )
    best = float("inf")
    for _ in range(reps):
        read = [_chunks(b) for b in batches]
        started = time.perf_counter()
        for chunks, n in zip(read, counts, strict=True):
            pusher_stdlib(chunks, n, after, rows)
        best = min(best, time.perf_counter() - started)
    peak = 0
    tracemalloc.start()
    try:
        for b, n in pairs:
            chunks = _chunks(b)  # made while traced: their freeing counts
            held = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            pusher_stdlib(chunks, n, after, rows)
            peak = max(peak, tracemalloc.get_traced_memory()[1] - held)
    finally:
        tracemalloc.stop()
    return {
        "pusher_identical": identical,
        "pusher_stdlib_us_per_row": round(best / sum(counts) * 1e6, 2),
        "pusher_python_peak_mib": round(peak / 2**20, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5000, help="rows per batch (the pusher's)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    total = args.rows * args.batches
    samples = generate_measurements(total, devices=100)
    numpy_batches, plain_batches = [], []
    for start in range(0, total, args.rows):
        items = measurement_items(samples[start : start + args.rows])
        items.sort(key=lambda item: (item["device_id"], item["time"]))
        batch = columns_from_rows(items)
        numpy_batches.append(batch)
        plain_batches.append((batch.rows, _plain(batch)))
    bodies = [encode_columns(b) for b in numpy_batches]
    identical = bodies == [encode_plain_columns(rows, cols) for rows, cols in plain_batches]
    numpy_us = _best_us_per_row(encode_columns, numpy_batches, total, args.reps)
    stdlib_us = _best_us_per_row(
        lambda pair: encode_plain_columns(*pair), plain_batches, total, args.reps
    )
    result: dict[str, Any] = {
        "rows": total,
        "batch_rows": args.rows,
        "byte_identical": identical,
        "numpy_us_per_row": round(numpy_us, 2),
        "stdlib_us_per_row": round(stdlib_us, 2),
        "stdlib_vs_numpy": round(stdlib_us / numpy_us, 1),
        "body_bytes_per_row": round(sum(map(len, bodies)) / total, 2),
        "zstd_bytes_per_row": round(sum(len(zstd_compress(b)) for b in bodies) / total, 2),
        "loadavg": os.getloadavg(),
    }
    result |= pusher_path(samples, args.rows, args.reps)
    identical = identical and result["pusher_identical"]
    print(json.dumps(result, indent=2))
    finish("encoder", result, figures(result), args.json)
    return 0 if identical else 1


def figures(result: dict[str, Any]) -> list[Figure]:
    return [
        Figure.of(
            "columnar encoder µs per row, stdlib (the pusher's)",
            f"{result['stdlib_us_per_row']:.2f}",
            f"numpy {result['numpy_us_per_row']:.2f} ({result['stdlib_vs_numpy']:.1f}x)",
        ),
        Figure.of(
            "columnar encoders give the same bytes",
            "yes" if result["byte_identical"] else "NO",
            f"{result['rows']:,} rows",
            "identical",
            bool(result["byte_identical"] and result["pusher_identical"]),
        ),
        Figure.of(
            "pusher records to body µs per row, stdlib (a gateway's)",
            f"{result['pusher_stdlib_us_per_row']:.2f}",
            f"{result['batch_rows']:,}-row batches",
        ),
        Figure.of(
            "pusher Python peak per batch (tracemalloc)",
            f"{result['pusher_python_peak_mib']:.2f} MiB",
            f"{result['batch_rows']:,}-row batches",
        ),
        Figure.of(
            "columnar body bytes per row",
            f"{result['body_bytes_per_row']:.1f}",
            f"zstd {result['zstd_bytes_per_row']:.1f}",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
