"""How long ingestd takes to decode (decompress and parse) the worst bodies at the wire limit.

`uv run python bench/hostile_decode.py [--wire-mib 16]`: each body of issue 19 is built at the
wire limit and handed to `ingestd.decoding.decode_batch`, the function the decoding pool runs
(decompression within its limits, then the parse), in a subprocess with a time cap; the figure
is the time until it answers (the refusal it raises, or its rows). Before issue 19 the worst,
16 MiB of empty gzip members, ran for minutes on the event loop (`decode_body` re-copied the
rest of the input per member; 29.3 s for 6.4 MB, quadratic); the target is well under a second.

Results go to bench/results/hostile_decode-<time>.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from report import Figure, Target, finish

TARGET = Target("<", 1.0, " s")
CAP_S = 600

_WORKER = r"""
import gzip, json, sys, time
from datetime import UTC, datetime, timedelta
from fleetcore import BatchType, ValidationWindow, zstd_compress
from ingestd.body import BodyFormat
from ingestd.decoding import DecodeLimits, WireBody, decode_batch
from ingestd.errors import IngestError
from ingestd.memory import BodyMemory, MemoryBudget

kind, wire_mib = sys.argv[1], int(sys.argv[2])
wire_limit = wire_mib * 1024 * 1024
if kind == "gzip_members":
    body, encoding = gzip.compress(b"", mtime=0) * (wire_limit // 20), "gzip"
elif kind == "zstd_frames":
    frame = zstd_compress(b"")
    body, encoding = frame * (wire_limit // len(frame)), "zstd"
elif kind == "tiny_items":
    body = gzip.compress(b'{"items":[' + b",".join([b"{}"] * ((64 * 1024 * 1024 - 64) // 3)) + b"]}", 9)
    encoding = "gzip"
else:
    body, encoding = gzip.compress(b'{"items":[' + b" " * (128 * 1024 * 1024) + b"]}", 9), "gzip"
window = ValidationWindow(datetime.now(UTC), timedelta(days=3660), timedelta(days=1))
memory = BodyMemory(MemoryBudget(512 * 1024 * 1024), 1)
limits = DecodeLimits(64 * 1024 * 1024, time.monotonic() + 3600, 3600, 1)
started = time.perf_counter()
try:
    decode_batch(WireBody(bytearray(body)), BodyFormat(False, encoding), BatchType.MEASUREMENTS,
                 window, limits, memory)
    outcome = "decoded"
except IngestError as exc:
    outcome = f"{exc.status} {exc.code}"
print(json.dumps({"wire_bytes": len(body), "seconds": time.perf_counter() - started,
                  "outcome": outcome}))
"""

BODIES = {
    "gzip_members": "empty gzip members filling the wire limit",
    "zstd_frames": "empty zstd frames filling the wire limit",
    "tiny_items": "{} items inflating to 64 MiB",
    "gzip_bomb": "a gzip bomb inflating past 64 MiB",
}


def _measure(kind: str, wire_mib: int) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _WORKER, kind, str(wire_mib)],
                              capture_output=True, text=True, timeout=CAP_S, check=True)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"wire_bytes": None, "seconds": None, "outcome": f"over {CAP_S} s (cap)"}
    result: dict[str, Any] = json.loads(proc.stdout)
    result["process_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wire-mib", type=int, default=16, help="the wire limit (16)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"wire_mib": args.wire_mib, "bodies": {}}
    figures = []
    for kind, what in BODIES.items():
        measured = _measure(kind, args.wire_mib)
        results["bodies"][kind] = measured
        seconds = measured["seconds"]
        text = f"{seconds:.3f} s" if seconds is not None else "-"
        figures.append(
            Figure.checked(
                f"decode {what}",
                seconds,
                f"{text} ({measured['outcome']}, {measured['wire_bytes'] or 0:,} B)",
                TARGET,
            )
        )
    finish("hostile_decode", results, figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
