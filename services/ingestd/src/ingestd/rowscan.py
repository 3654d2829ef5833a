"""A large JSON measurement body (or a chunk of one) as columns by the C scanner
(`ingestd._rowscan`): the decoding path's first way for such a body.

The scanner writes each row's values into a float64 column, its id into an int64 one and its two
times' texts into fixed-width byte rows, in one pass over the bytes with the GIL released (the
event loop runs meanwhile); here the times are read a column at a time (`fleetcore.rfc3339`, each
run of one sample time once) and the values' bounds checked on the matrix, as
`fleetcore.json_text_time` does with msgspec's rows. It takes the form a pusher writes (see the C
file) and answers None for anything else, as for a value out of bounds, a time in another form or
a time outside the window: `fleetcore.json_columns` then takes the body its own way, which also
says which rows are refused and why. Where both take a body they give the same columns, bit for
bit (tests/ingestd/test_rowscan.py).

A 5,000-row gzip JSON batch: ~0.6 µs/row to columns against msgspec's ~1.8 (bench/README.md,
issue 26's eleventh pass).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from fleetcore.columnar import MeasurementColumns
from fleetcore.columnar_batch import ParsedColumns
from fleetcore.json_columns import inside_window
from fleetcore.json_text_time import key_value_columns, values_in_bounds
from fleetcore.limits import MAX_BATCH_ROWS
from fleetcore.rfc3339 import micros_of_bytes
from fleetcore.schemas import MEASUREMENT_VALUE_FIELDS, ValidationWindow

from ingestd import _rowscan

__all__ = ["ITEMS_HEAD", "ITEMS_TAIL", "items_span", "scan_clean", "scan_columns"]

Int64s = npt.NDArray[np.int64]

ITEMS_HEAD = b'{"items":['
ITEMS_TAIL = b"]}"
_KEYS = tuple(field.encode() for field in MEASUREMENT_VALUE_FIELDS)
_TEXT_WIDTH = 33
"""As the C file's TEXT_WIDTH: the longest accepted time text is 32 characters
(`fleetcore.rfc3339`); a 33rd marks a longer one."""


def items_span(body: bytes | bytearray) -> tuple[int, int] | None:
    """The byte span of a body's items when it is exactly `{"items":[ … ]}` (a pusher's), else
    None."""
    if not body.startswith(ITEMS_HEAD) or not body.endswith(ITEMS_TAIL):
        return None
    return len(ITEMS_HEAD), len(body) - len(ITEMS_TAIL)


def _time_micros(texts: npt.NDArray[np.uint8], lengths: Int64s, n: int) -> Int64s | None:
    """The µs of the rows' sample times (`texts[:n]`) and received times (`texts[n:]`), as the
    rows (time, received_at) of one matrix, in one `micros_of_bytes` call; a sample time column
    of runs of one text (a batch in time order: 5,000 rows of 20 meters hold 250) read once per
    run. None when a text is not in an accepted form."""
    rows = texts[:n].view(f"S{_TEXT_WIDTH}").ravel()  # zero-padded: equal rows, equal texts
    starts = np.empty(n, np.bool_)
    starts[0] = True
    np.not_equal(rows[1:], rows[:-1], out=starts[1:])
    runs = np.flatnonzero(starts)
    out = np.empty((2, n), np.int64)
    if len(runs) * 4 <= n:
        k = len(runs)
        pick = np.concatenate((runs, np.arange(n, 2 * n)))
        micros = micros_of_bytes(texts[pick], lengths[pick])
        if micros is None:
            return None
        at = np.cumsum(starts, dtype=np.intp)
        at -= 1
        out[0] = micros[:k][at]
        out[1] = micros[k:]
        return out
    micros = micros_of_bytes(texts, lengths)
    if micros is None:
        return None
    out[0] = micros[:n]
    out[1] = micros[n:]
    return out


def scan_columns(body: bytes | bytearray, span: tuple[int, int]) -> MeasurementColumns | None:
    """The items of `body[span[0]:span[1]]` (a comma-separated run of items, as `items_span` or
    `fleetcore.json_columns.item_spans` gives) as columns when every row is valid and in the
    form the scanner takes; None for any other (also for more rows than a batch may carry: the
    way that refuses them says so)."""
    start, end = span
    cap = _rowscan.count_items(body, start, end)  # each item holds a `{`: at least the rows
    if cap > MAX_BATCH_ROWS:
        return None
    values = np.empty((len(_KEYS), cap), np.float64)
    ids = np.empty(cap, np.int64)
    texts = np.zeros((2 * cap, _TEXT_WIDTH), np.uint8)
    lengths = np.empty(2 * cap, np.int64)
    scanned = _rowscan.scan(
        body, start, end, cap, _KEYS,
        values, ids, texts[:cap], lengths[:cap], texts[cap:], lengths[cap:],
    )  # fmt: skip
    if scanned is None:
        return None
    n, nullable = scanned
    if not n:
        return MeasurementColumns(0, {})
    if n < cap:  # a `{` inside a text: in no accepted time, so not a batch this way takes
        return None
    micros = _time_micros(texts, lengths, n)
    if micros is None:
        return None
    if not values_in_bounds(values, nullable):
        return None
    keys = np.empty((3, n), np.int64)
    keys[0], keys[2] = micros
    keys[1] = ids
    return key_value_columns(keys, values, nullable)


def scan_clean(
    body: bytes | bytearray, span: tuple[int, int], window: ValidationWindow
) -> ParsedColumns | None:
    """`scan_columns` of the span when every row is inside the window (what
    `fleetcore.json_columns.clean_measurement_columns` answers for such a body), else None."""
    columns = scan_columns(body, span)
    if columns is None:
        return None
    if not columns.rows:
        return ParsedColumns(columns)
    return inside_window(columns, window)
