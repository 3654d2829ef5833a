"""How many items a JSON batch body can hold, counted without building them.

Decoding `{"items": [...]}` into one object per item costs ~65 bytes per item whatever the
item's size, and an item can be 3 bytes (`{},`): a 64 MiB body would ask for 1.4 GB before any
row limit could be checked (msgspec checks an array's length after building it). So a body whose
rows must be looked at one by one is first scanned here: `max_items` counts the values of every
array directly inside the top-level object (an upper bound for `items`) from the bytes alone,
vectorised with numpy over fixed-size chunks (a few MB of temporaries whatever the body size).

The scan follows JSON's lexical rules: inside strings nothing is structural, and a backslash
escapes the next byte (runs of backslashes pair up). On a body that is not JSON the count is
meaningless, but the decoder that runs next refuses such a body at its first error, having
built at most the items before it, which the scan counted like any other.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["max_items"]

_CHUNK = 1 << 20
_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_BACKSLASH_BYTE = b"\\"
_DELTA = np.zeros(256, np.int8)
_DELTA[[ord("{"), ord("[")]] = 1
_DELTA[[ord("}"), ord("]")]] = -1


def _escaped(
    backslash: npt.NDArray[np.bool_], run_before: int
) -> tuple[npt.NDArray[np.bool_], int]:
    """Which bytes follow an odd run of backslashes (escaped), given the run of `run_before`
    backslashes that ended the previous chunk; also the run that ends this chunk."""
    index = np.arange(backslash.size, dtype=np.int64)
    last_other = np.maximum.accumulate(np.where(backslash, -1, index))
    run = index - last_other + np.where(last_other < 0, run_before, 0)  # backslashes up to i
    escaped = np.empty(backslash.size, np.bool_)
    escaped[0] = run_before % 2 == 1
    escaped[1:] = run[:-1] % 2 == 1
    return escaped, int(run[-1])


def max_items(body: bytes | bytearray, stop_above: int | None = None) -> int:
    """An upper bound of the values in the arrays directly inside the top-level object of
    `body` (valid JSON): their count, plus one for each empty one. With `stop_above`, the scan
    ends at the first chunk that takes the count past it (the count is then that far)."""
    data = np.frombuffer(body, np.uint8)
    count = 0
    depth = 0
    in_string = 0
    run_before = 0
    for start in range(0, data.size, _CHUNK):
        chunk = data[start : start + _CHUNK]
        quote = chunk == _QUOTE
        if run_before or body.find(_BACKSLASH_BYTE, start, start + _CHUNK) >= 0:
            escaped, run_before = _escaped(chunk == _BACKSLASH, run_before)
            quote &= ~escaped
        parity = np.bitwise_xor.accumulate(quote.view(np.uint8))
        parity ^= in_string
        in_string = int(parity[-1])
        inside = (parity | quote.view(np.uint8)).view(np.bool_)  # strings, quotes included
        delta = _DELTA[chunk]
        delta[inside] = 0
        depth_after = np.cumsum(delta, dtype=np.int32)
        depth_after += depth
        depth = int(depth_after[-1])
        level = depth_after == 2  # after an opening bracket, or at a comma (its delta is 0)
        count += int(np.count_nonzero(level & (chunk == _COMMA) & ~inside))
        count += int(np.count_nonzero(level & (delta == 1)))
        if stop_above is not None and count > stop_above:
            break
    return count
