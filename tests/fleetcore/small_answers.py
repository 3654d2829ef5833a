"""What a decoded batch answers, as comparable values (tests of the small batches' ways)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fleetcore import ParsedColumns
from fleetcore.columnar import MeasurementColumns


def columns_key(columns: MeasurementColumns) -> tuple[Any, ...]:
    """Every column's name, dtype, bits where not null and nulls (what storage reads)."""
    out: list[Any] = [columns.rows]
    for name, column in columns.columns.items():
        nulls = column.null_mask()
        patterns = column.values.view(np.int64).tolist()
        kept = [0 if null else p for p, null in zip(patterns, nulls.tolist(), strict=True)]
        out.append((name, str(column.values.dtype), kept, nulls.tolist()))
    return tuple(out)


def answer(parsed: ParsedColumns | None) -> tuple[Any, ...] | None:
    if parsed is None:
        return None
    rejections = [(r.index, r.reason, r.payload) for r in parsed.rejections]
    return (columns_key(parsed.valid), rejections, parsed.first_time, parsed.last_time)
