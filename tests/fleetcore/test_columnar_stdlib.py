"""The standard-library columnar encoder (the pusher's) gives byte for byte the numpy encoder's
body, and needs no numpy to do it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from fleetcore import decode_columns, encode_columns, intpack, intpack_stdlib
from fleetcore.columnar import Column, MeasurementColumns
from fleetcore.columnar_stdlib import PlainColumn, encode_plain_columns
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fleetcore.test_columnar import EXTREMES, assert_same, batches


def plain(batch: MeasurementColumns) -> dict[str, PlainColumn]:
    """The batch as the pusher holds it: Python lists of ints and floats, lists of null flags."""
    return {
        name: PlainColumn(c.values.tolist(), None if c.nulls is None else c.nulls.tolist())
        for name, c in batch.columns.items()
    }


def assert_identical(batch: MeasurementColumns) -> None:
    body = encode_plain_columns(batch.rows, plain(batch))
    assert body == encode_columns(batch)
    assert_same(batch, decode_columns(body))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(max_rows=40))
def test_small_batches_are_byte_identical(batch: MeasurementColumns) -> None:
    """Any small (bit-packed) batch — full int64 keys, NaN, ±inf, -0.0, subnormals, nulls —
    encodes to the numpy encoder's very bytes."""
    assert_identical(batch)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(max_rows=700))
def test_large_batches_are_byte_identical(batch: MeasurementColumns) -> None:
    """Batches past the bit-packing threshold and the 512-row sample (byte-shuffled, forms
    judged on the sample) are byte-identical too."""
    assert_identical(batch)


@pytest.mark.parametrize("seed", range(4))
def test_meter_like_batches_are_byte_identical(seed: int) -> None:
    """Meter readings (decimals of a few places, related phases that reference each other,
    rising times per meter, a few nulls) and random float64 bit patterns pick the same forms,
    references, scales and packings in both encoders."""
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(256, 6000))
    meters = 1 + np.arange(rows) % 37
    time = 1_790_000_000_000_000 + np.arange(rows) // 37 * 60_000_000
    load = rng.uniform(5, 180, rows)
    columns = {
        "time": Column(time.astype(np.int64)),
        "device_id": Column(meters.astype(np.int64)),
        "received_at": Column((time + rng.integers(1_000_000, 4_000_000, rows)).astype(np.int64)),
        "v1": Column(np.round(rng.normal(230, 2, rows), 1)),
        "v2": Column(np.round(rng.normal(230, 2, rows), 1)),
        "i1": Column(np.round(load * rng.uniform(0.9, 1.1, rows), 2), rng.random(rows) < 0.05),
        "i2": Column(np.round(load * rng.uniform(0.9, 1.1, rows), 2), rng.random(rows) < 0.05),
        "pf_total": Column(rng.integers(0, 2**64 - 1, rows, dtype=np.uint64).view(np.float64)),
        "freq": Column(rng.choice(np.array([*EXTREMES, 50.01]), rows)),
    }
    assert_identical(MeasurementColumns(rows, columns))


def test_bad_columns_are_refused() -> None:
    """An unknown column or one of the wrong length is a ValueError, as with numpy."""
    keys = {name: PlainColumn([1]) for name in ("time", "device_id", "received_at")}
    with pytest.raises(ValueError, match="unknown column"):
        encode_plain_columns(1, {**keys, "volts": PlainColumn([1.0])})
    with pytest.raises(ValueError, match="has 2 values"):
        encode_plain_columns(1, {**keys, "v1": PlainColumn([1.0, 2.0])})
    with pytest.raises(ValueError, match="null flags"):
        encode_plain_columns(1, {**keys, "v1": PlainColumn([1.0], [False, True])})


def test_encoding_needs_no_numpy() -> None:
    """fleetcore, its protocol constants and the standard-library encoder import and encode in a
    Python where numpy cannot be imported at all (a gateway without it)."""
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import fleetcore, fleetcore.protocol\n"
        "from fleetcore.columnar_stdlib import PlainColumn, encode_plain_columns\n"
        "cols = {n: PlainColumn([1, 2]) for n in ('time', 'device_id', 'received_at')}\n"
        "cols['v1'] = PlainColumn([230.1, 0.0], [False, True])\n"
        "print(encode_plain_columns(2, cols).hex())\n"
        "assert 'numpy' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    batch = MeasurementColumns(
        2,
        {
            **{n: Column(np.array([1, 2], np.int64)) for n in ("time", "device_id", "received_at")},
            "v1": Column(np.array([230.1, 0.0]), np.array([False, True])),
        },
    )
    assert bytes.fromhex(done.stdout.strip()) == encode_columns(batch)


_EDGES = [2.0**50, 2.0**50 - 0.5, 2.0**51 + 1, 2.0**53 - 1, 2.0**53, 1.5, 2.5, -2.5, 0.125, 1e-15,
          5e-16, 123456789.123456, float("nan"), float("inf"), -float("inf"), 1e300, -0.0]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(_EDGES),
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(-(10**9), 10**9).flatmap(
                lambda k: st.sampled_from([k / 10**s for s in range(0, 16)])
            ),
        ),
        min_size=1,
        max_size=700,
    )
)
def test_decimal_scale_is_numpys_for_any_floats(values: list[float]) -> None:
    """The standard library's decimal scale (its rounding without round() below 2**50, one
    round() at a time above, NaN and infinities) is numpy's for any column, edges included."""
    found = intpack_stdlib.decimal_scale(values)
    expected = intpack.decimal_scale(np.array(values, dtype=np.float64))
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert found[0] == expected[0] and found[1].tolist() == expected[1].tolist()
