"""Decoding benchmark: CPU of ingestd's decoding step, each way it can take, in one process.

    uv run python bench/decode.py [--rows 5000] [--reps 30]

`bench/ingest.py` reads ingestd's CPU from /proc, in 0.5 µs/row steps at its sizes; this one
times the decoding step alone with `time.process_time()`, the ways alternated in one process so
a busy machine slows both alike:

  large   a `--rows` gzip JSON body (`common.generate_measurements`) into columns: msgspec's
          typed rows then `columns_of_rows` (the way every body took before, and small bodies
          still take), against `text_time_columns` (msgspec's way for bodies of 32 KiB and more)
          and the C scanner (`ingestd.rowscan.scan_columns`, ingestd's first way for them); then
          inflate, parse and the COPY stream (`decode_batch` + `copy_stream`) as ingestd runs them
  chunks  the same body's streamed way (issue 26: `ingestd.decoding`'s cut, then each chunk's
          columns and COPY tuples, as `ingestd.ingest._ChunkFeed` makes them) for each chunk
          schedule of `SCHEDULES`, alternated `--reps` times: what the chunks' fixed work costs
          per row against two halves, with the median of the per-alternation differences
  small   a 27-row gzip JSON body (a gateway's minute) through `ingestd.decoding.decode` (on the
          event loop) against `run_in_executor(decode_batch)` (the decoding pool's hand-off)

Prints the medians and first quartiles (µs per row, µs per request). Results go to
bench/results/decode-<time>.json (or --json).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetcore import BatchType, ValidationWindow
from fleetcore.json_batch import decode_measurement_rows
from fleetcore.json_columns import (
    chunk_body,
    clean_measurement_columns,
    columns_of_rows,
    item_spans,
    text_time_columns,
)
from ingestd.body import BodyFormat, decode_body
from ingestd.decoding import (
    Chunked,
    DecodeLimits,
    WireBody,
    chunk_schedule,
    decode,
    decode_batch,
)
from ingestd.memory import BodyMemory, MemoryBudget
from ingestd.rowscan import items_span, scan_columns
from ingestd.storage.copybuffer import copy_stream
from report import Figure, finish
from rows import encode_batch, generate_measurements, measurement_items

WINDOW = ValidationWindow(datetime.now(UTC), timedelta(days=3650), timedelta(days=1))
GZIP_JSON = BodyFormat(False, "gzip")
_BUDGET = MemoryBudget(1 << 30)


def _limits() -> DecodeLimits:
    return DecodeLimits(64 << 20, time.monotonic() + 60, 60, 1)


def _alternate(ways: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
    """CPU seconds of each way, `reps` times, the ways taking turns."""
    out: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(reps):
        for name, way in ways.items():
            started = time.process_time()
            way()
            out[name].append(time.process_time() - started)
    return out


def _quartile(samples: list[float]) -> float:
    return sorted(samples)[len(samples) // 4]


def _paired(samples: list[float], against: list[float], rows: int) -> str:
    """The median of the per-alternation differences, µs/row, signed."""
    return f"{1e6 * statistics.median(a - b for a, b in zip(samples, against, strict=True)) / rows:+.3f}"


def _large(rows: int, reps: int) -> dict[str, list[float]]:
    wire = encode_batch(measurement_items(generate_measurements(rows)))
    body = bytes(decode_body(bytearray(wire), encoding="gzip", max_body_bytes=64 << 20).data)

    def typed() -> None:
        valid = decode_measurement_rows(body)
        assert valid is not None
        columns_of_rows(valid)

    def text() -> None:
        assert text_time_columns(body) is not None

    span = items_span(body)
    assert span is not None

    def scanned() -> None:
        assert scan_columns(body, span) is not None

    def whole() -> None:
        memory = BodyMemory(_BUDGET, 1)
        decoded = decode_batch(
            WireBody(bytearray(wire)), GZIP_JSON, BatchType.MEASUREMENTS, WINDOW, _limits(), memory
        )
        parsed = decoded.parsed
        if isinstance(parsed, Chunked):  # stored as decoded: each chunk's columns and tuples
            for i in range(len(parsed.spans)):
                chunk = parsed.parse(i)
                assert chunk is not None
                copy_stream(chunk.valid, 1, header=i == 0, trailer=i == len(parsed.spans) - 1)
        else:
            copy_stream(parsed.valid, 1)
        memory.release()

    return _alternate({"typed": typed, "text": text, "scanned": scanned, "whole": whole}, reps)


KIB = 1024
Schedule = Callable[[int], tuple[int, int, int]]


def _growing(first: int, most: int, growth: int) -> Schedule:
    return lambda _size: (first, most, growth)


SCHEDULES: dict[str, Schedule] = {
    "halves": lambda size: (size // 2, size // 2, 1),
    "ingestd's": chunk_schedule,
    "two fifths, then the rest": lambda size: (min(size * 2 // 5, 1024 * KIB), 1024 * KIB, 1),
    "64 KiB x4 to 1 MiB": _growing(64 * KIB, 1024 * KIB, 4),
    "256 KiB x4 to 1 MiB": _growing(256 * KIB, 1024 * KIB, 4),
    "64 KiB x2 to 512 KiB": _growing(64 * KIB, 512 * KIB, 2),
}
"""Chunk schedules (a body's size to `item_spans`' first, most, growth) compared by `_chunks`:
two halves, ingestd's (`ingestd.decoding.chunk_schedule`), two fifths then the rest (ingestd's
until issue 26's seventh pass), growing chunks (64 KiB x4 to 1 MiB was ingestd's from 87546ef)."""


def _spans(body: bytes, schedule: Schedule) -> list[tuple[int, int]]:
    spans = item_spans(body, *schedule(len(body)))
    assert spans is not None
    return spans


def _chunks(rows: int, reps: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """CPU seconds of each schedule's chunks (columns and COPY tuples), the schedules taking
    turns; and each one's number of chunks."""
    wire = encode_batch(measurement_items(generate_measurements(rows)))
    body = bytes(decode_body(bytearray(wire), encoding="gzip", max_body_bytes=64 << 20).data)
    spans = {name: _spans(body, schedule) for name, schedule in SCHEDULES.items()}

    def streamed(cuts: list[tuple[int, int]]) -> Callable[[], None]:
        def run() -> None:
            for span in cuts:
                chunk = clean_measurement_columns(chunk_body(body, span), WINDOW)
                assert chunk is not None
                copy_stream(chunk.valid, 1, header=False, trailer=False)

        return run

    times = _alternate({name: streamed(cuts) for name, cuts in spans.items()}, reps)
    return times, {name: len(cuts) for name, cuts in spans.items()}


def _small(reps: int, requests: int) -> dict[str, list[float]]:
    wire = encode_batch(measurement_items(generate_measurements(27, devices=27)))

    async def run() -> dict[str, list[float]]:
        loop = asyncio.get_running_loop()
        out: dict[str, list[float]] = {"pool": [], "inline": []}
        with ThreadPoolExecutor(4) as pool:
            for _ in range(reps):
                for name in out:
                    started = time.process_time()
                    for _ in range(requests):
                        memory = BodyMemory(_BUDGET, 1)
                        body = WireBody(bytearray(wire))
                        args = (body, GZIP_JSON, BatchType.MEASUREMENTS, WINDOW, _limits(), memory)
                        if name == "pool":
                            await loop.run_in_executor(pool, decode_batch, *args)
                        else:
                            await decode(pool, *args)
                        memory.release()
                    out[name].append((time.process_time() - started) / requests)
        return out

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=5000, help="rows of the large body")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200, help="small bodies per rep")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    large = _large(args.rows, args.reps)
    chunked, counts = _chunks(args.rows, args.reps)
    small = _small(max(args.reps // 4, 3), args.requests)

    def per_row(samples: list[float]) -> str:
        return f"{1e6 * statistics.median(samples) / args.rows:.2f}"

    def q1_row(samples: list[float]) -> str:
        return f"first quartile {1e6 * _quartile(samples) / args.rows:.2f}"

    figures = [
        Figure.of("large JSON to columns, typed rows, µs/row", per_row(large["typed"]),
                  q1_row(large["typed"])),
        Figure.of("large JSON to columns, times as text, µs/row", per_row(large["text"]),
                  q1_row(large["text"])),
        Figure.of("large JSON to columns, the C scanner, µs/row", per_row(large["scanned"]),
                  q1_row(large["scanned"])),
        Figure.of("large: inflate + parse + COPY stream, µs/row", per_row(large["whole"]),
                  q1_row(large["whole"])),
        *(
            Figure.of(
                f"chunks, {name} ({counts[name]}), µs/row",
                per_row(samples),
                f"{q1_row(samples)}; vs halves by alternation, median "
                f"{_paired(samples, chunked['halves'], args.rows)}",
            )
            for name, samples in chunked.items()
        ),
        Figure.of("27-row JSON via the decoding pool, µs/request",
                  f"{1e6 * statistics.median(small['pool']):.0f}"),
        Figure.of("27-row JSON decoded on the event loop, µs/request",
                  f"{1e6 * statistics.median(small['inline']):.0f}"),
    ]  # fmt: skip
    result = {
        "rows": args.rows,
        "reps": args.reps,
        "large": large,
        "chunks": {"cpu_s": chunked, "count": counts},
        "small": small,
    }
    finish("decode", result, figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
