"""`ingestd.storage.binary_arrays`: the small batch's keys and dirty marks laid out together or
packed by `struct` are the bytes `binary_array` makes of each, and PostgreSQL reads them back."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from ingestd.storage.binary_arrays import bigint_array, bigint_arrays, binary_array

VALUES = [0, 1, -1, 2**63 - 1, -(2**63), 472_222, 1_700_000_000_000_000]


@pytest.mark.parametrize("n", [0, 1, 7, 27, 64, 65, 300])
def test_bigint_array_is_binary_arrays_layout(n: int) -> None:
    rng = np.random.default_rng(n)
    values = [int(v) for v in rng.integers(-(2**62), 2**62, n)]
    expected = binary_array(np.asarray(values, np.int64), ">i8", None).data
    assert bigint_array(values).data == expected
    assert bigint_array(np.asarray(values, np.int64).tolist()).data == expected


@pytest.mark.parametrize("n", [1, 27, 200])
def test_bigint_arrays_are_each_columns_layout(n: int) -> None:
    rng = np.random.default_rng(n)
    columns = [rng.integers(-(2**62), 2**62, n), np.arange(n, dtype=np.int64), np.full(n, 5)]
    got = [a.data for a in bigint_arrays(columns)]
    assert got == [binary_array(c, ">i8", None).data for c in columns]


def test_postgresql_reads_them(central_db: str) -> None:
    columns = [np.asarray(VALUES, np.int64), np.asarray(VALUES[::-1], np.int64)]
    first, second = bigint_arrays(columns)
    with psycopg.connect(central_db, autocommit=True) as conn:
        row = conn.execute(
            "SELECT %b::bigint[], %b::bigint[], %b::bigint[]",
            (first, second, bigint_array(VALUES)),
        ).fetchone()
    assert row == (VALUES, VALUES[::-1], VALUES)
