"""Types of the C extension `ingestd._rowscan` (src/ingestd/_rowscan.c; used by ingestd.rowscan).
The buffers are C-contiguous and writable; the C checks their sizes."""

import numpy as np
import numpy.typing as npt

def count_items(body: bytes | bytearray, start: int, end: int, /) -> int:
    """The `{` in body[start:end]: at least the items there."""

def scan(
    body: bytes | bytearray,
    start: int,
    end: int,
    cap: int,
    keys: tuple[bytes, ...],
    values: npt.NDArray[np.float64],
    ids: npt.NDArray[np.int64],
    times: npt.NDArray[np.uint8],
    time_lengths: npt.NDArray[np.int64],
    received: npt.NDArray[np.uint8],
    received_lengths: npt.NDArray[np.int64],
    /,
) -> tuple[int, bool] | None:
    """The items of body[start:end] into the buffers (see the C file): (rows, whether a value is
    null), or None when an item is not in the form taken."""
