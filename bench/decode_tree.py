"""A large gzip JSON measurement body to the bytes ingestd's COPY sends, timed in one process, in
whichever tree runs it: `bench/ingest_ab.py` runs this file with each tree's own interpreter,
from that tree's directory (its `bench/common.py` and its ingestd).

    (cd ../fleet-before && .venv/bin/python ../fleet/bench/decode_tree.py --reps 20)

This tree: `decode_batch` (inflate, JSON to columns; a body it cuts in chunks, each chunk's
columns as ingestd stores it) then `copy_stream` (the scaled layout). A
tree before the scaled layout (no `fleetcore.json_columns`, be68c29^): `decode_body`, msgspec's
typed rows (`parse_batch`), then psycopg's binary row formatter on each row as its
`store_measurements` fed COPY (`write_row`), without a connection. glibc's malloc is set as
that tree's `ingestd serve` sets it (`ingestd.heap`, where there is one). Prints one JSON line: the
way, and the CPU µs per row (`time.process_time`) of each repetition.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path.cwd() / "bench"))

from fleetcore import BatchType, ValidationWindow
from rows import encode_batch, generate_measurements, measurement_items

WINDOW = ValidationWindow(datetime.now(UTC), timedelta(days=3650), timedelta(days=1))


def _scaled(wire: bytes) -> Callable[[], Any]:
    from ingestd.body import BodyFormat
    from ingestd.decoding import DecodeLimits, WireBody, decode_batch

    try:
        from ingestd.decoding import Chunked
    except ImportError:  # a tree from before the chunks
        Chunked = ()  # type: ignore[assignment,misc]  # isinstance(x, ()) is False
    from ingestd.memory import BodyMemory, MemoryBudget
    from ingestd.storage.copybuffer import copy_stream

    budget = MemoryBudget(1 << 30)

    def tuples(stream: Any) -> bytes:
        """A tree's `copy_stream` answer as bytes (a `CopyStream` since the columns null in every
        row are left out, bytes before)."""
        return stream if isinstance(stream, bytes) else stream.data

    def once() -> bytes:
        memory = BodyMemory(budget, 1)
        limits = DecodeLimits(64 << 20, time.monotonic() + 60, 60, 1)
        decoded = decode_batch(
            WireBody(bytearray(wire)),
            BodyFormat(False, "gzip"),
            BatchType.MEASUREMENTS,
            WINDOW,
            limits,
            memory,
        )
        parsed = decoded.parsed
        if isinstance(parsed, Chunked):  # stored as decoded: each chunk's columns and tuples
            last = len(parsed.spans) - 1
            parts = []
            for i in range(last + 1):
                chunk = parsed.parse(i)
                assert chunk is not None
                parts.append(tuples(copy_stream(chunk.valid, 1, header=i == 0, trailer=i == last)))
            stream = b"".join(parts)
        else:
            stream = tuples(copy_stream(parsed.valid, 1))  # type: ignore[union-attr]
        memory.release()
        return stream

    return once


def _float8(wire: bytes) -> Callable[[], Any]:  # pragma: no cover - an older tree's code
    import msgspec
    from fleetcore import parse_batch  # type: ignore[attr-defined]
    from ingestd.body import decode_body
    from ingestd.storage import writes
    from psycopg import postgres
    from psycopg._copy_base import BinaryFormatter
    from psycopg.adapt import Transformer
    from psycopg.pq import Format

    tx = Transformer()
    types = [postgres.types[t].oid for t in writes._COPY_TYPES]  # type: ignore[attr-defined]
    tx.set_dumper_types(types, Format.BINARY)
    astuple = msgspec.structs.astuple

    def once() -> list[Any]:
        body = decode_body(bytearray(wire), encoding="gzip", max_body_bytes=64 << 20)  # type: ignore[call-arg]
        rows = parse_batch(body.data, BatchType.MEASUREMENTS, WINDOW).rows
        formatter = BinaryFormatter(tx)
        out = [formatter.write_row((*astuple(r), 1)) for r in rows]
        out.append(formatter.end())
        return out

    return once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args(argv)
    try:  # glibc kept from handing a batch's buffers back, as `ingestd serve` does
        from ingestd.heap import keep_freed_memory

        keep_freed_memory()
    except ImportError:  # a tree from before it
        pass
    wire = encode_batch(measurement_items(generate_measurements(args.rows)))
    try:
        import fleetcore.json_columns  # noqa: F401

        way, once = "columns, scaled layout", _scaled(wire)
    except ImportError:
        way, once = "rows, float8 layout (write_row)", _float8(wire)
    once()
    samples = []
    for _ in range(args.reps):
        started = time.process_time()
        once()
        samples.append(1e6 * (time.process_time() - started) / args.rows)
    print(json.dumps({"way": way, "us_per_row": samples}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
