"""How a measurement row is laid out in the central table, and how values are split into it.

`fleet.power_measurements_scaled` (migration 0008) holds each of the 24 values twice over, one
of the two NULL: `<name>_scaled`, the integer k = value x 10^decimals at the field's resolution
(`fleetcore.resolution`), for a value that is exactly a whole number of steps; `<name>`
(double precision), the value as sent, for any other (finer than the resolution, -0.0, beyond
the integer's range) and for rows stored before the scaled layout. Readers use the view
`fleet.power_measurements`, which gives back coalesce(<name>, <name>_scaled / 10^decimals) —
the double that was sent, bit for bit (`k / 10^decimals` is the division the split checked).

`split_columns` makes that split for whole columns at once (numpy); both encodings' batches
arrive as columns (`fleetcore.json_columns` turns a JSON body's rows into them), so both write
through one code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetcore.resolution import RESOLUTIONS, Resolution

__all__ = [
    "READERS_VIEW",
    "STORED_TABLE",
    "SplitColumn",
    "field_bounds",
    "scaled_column",
    "split_column",
    "split_columns",
    "split_matrix",
    "split_steps",
    "value_sql",
]

STORED_TABLE = "fleet.power_measurements_scaled"
"""The table ingest writes; `fleet.power_measurements` is the readers' view of it."""

Int64s = npt.NDArray[np.int64]
Float64s = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


def scaled_column(field: str) -> str:
    return f"{field}_scaled"


def value_sql(alias: str, field: str) -> str:
    """The SQL expression of a value as sent, from the stored row `alias` (what the view does;
    the continuous aggregate, which must read the hypertable itself, uses it too)."""
    r = RESOLUTIONS[field]
    return f"coalesce({alias}.{field}, {alias}.{scaled_column(field)} / {r.factor:g}::float8)"


def _view_statements() -> tuple[str, ...]:
    fields = MEASUREMENT_VALUE_FIELDS
    values = ",\n       ".join(f"{value_sql('m', f)} AS {f}" for f in fields)

    def to_scaled(f: str) -> str:
        r = RESOLUTIONS[f]
        return f"fleet.to_scaled(NEW.{f}, {r.factor:g}, {r.max_steps})"

    exact = ",\n        ".join(f"CASE WHEN {to_scaled(f)} IS NULL THEN NEW.{f} END" for f in fields)
    scaled = ",\n        ".join(to_scaled(f) for f in fields)
    stored = ", ".join((*fields, *(scaled_column(f) for f in fields)))
    return (
        f"""CREATE OR REPLACE VIEW fleet.power_measurements AS
SELECT m.time, m.customer_id, m.device_id, m.received_at,
       {values}
FROM {STORED_TABLE} AS m""",
        f"""CREATE OR REPLACE FUNCTION fleet.power_measurements_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {STORED_TABLE} (time, customer_id, device_id, received_at,
        {stored})
    VALUES (NEW.time, NEW.customer_id, NEW.device_id, NEW.received_at,
        {exact},
        {scaled});
    RETURN NEW;
END
$$""",
        """CREATE OR REPLACE TRIGGER power_measurements_insert
    INSTEAD OF INSERT ON fleet.power_measurements
    FOR EACH ROW EXECUTE FUNCTION fleet.power_measurements_insert()""",
    )


READERS_VIEW: tuple[str, ...] = _view_statements()
"""`fleet.power_measurements` (today's columns, names, order and types) over the stored table,
and the trigger that lets SQL insert into it (migration 0008 made the same; the plain path's
bootstrap makes it again after partitioning the table)."""


@dataclass(frozen=True, slots=True)
class SplitColumn:
    """One value column split for storage: the integers (`scaled_nulls` where not stored as
    one) and the exact doubles (`exact_nulls` where not needed)."""

    scaled: Int64s
    scaled_nulls: Mask
    exact: Float64s
    exact_nulls: Mask


def field_bounds(
    resolutions: Sequence[Resolution],
) -> tuple[Float64s, Float64s]:
    """The fields' 10^decimals and largest storable |k|, as column vectors for `split_matrix`
    (a caller splitting the same fields every batch builds them once)."""
    factors = np.array([r.factor for r in resolutions], np.float64)[:, None]
    limits = np.array([float(r.max_steps) for r in resolutions], np.float64)[:, None]
    return factors, limits


def split_matrix(
    values: Float64s, nulls: Mask | None, factors: Float64s, limits: Float64s
) -> tuple[Int64s, Mask]:
    """Several value columns at once (one row of `values`/`nulls` per field, `field_bounds` of
    those fields; `nulls` None: none null): the integer steps, and where a value is whole
    steps (never where null). Checked on the bits of k / 10^decimals, as the view computes it
    back."""
    with np.errstate(over="ignore", invalid="ignore"):  # in place: ~30 % fewer passes
        steps = np.multiply(values, factors)
        np.rint(steps, out=steps)
        whole = np.abs(steps) <= limits  # False for NaN and infinities
        steps[~whole] = 0.0
        ints = steps.astype(np.int64)
        back = ints.astype(np.float64)
        back /= factors
    whole &= back.view(np.int64) == values.view(np.int64)
    if nulls is not None:
        whole &= ~nulls
    return ints, whole


def split_steps(
    values: Float64s, nulls: Mask | None, factors: Float64s, limits: Float64s
) -> tuple[Float64s, Mask]:
    """`split_matrix` with the steps left as doubles (whole numbers wherever the mask is True;
    anything, NaN included, elsewhere) for a caller that casts them as it writes them (the COPY
    stream): no pass to integers and back. The check is the same: k / 10^decimals has the bits
    of the value, k from the +0.0 of the rounded product, so -0.0 (whose k is 0, back +0.0) is
    not whole steps, as in `split_matrix`."""
    with np.errstate(over="ignore", invalid="ignore"):
        steps = np.multiply(values, factors)
        np.rint(steps, out=steps)
        steps += 0.0  # -0.0 -> +0.0, as through an integer
        whole = np.abs(steps) <= limits  # False for NaN and infinities
        back = steps / factors
    whole &= back.view(np.int64) == values.view(np.int64)
    if nulls is not None:
        whole &= ~nulls
    return steps, whole


def split_columns(
    values: npt.NDArray[np.float64], nulls: Mask, resolutions: Sequence[Resolution]
) -> tuple[npt.NDArray[np.int64], Mask]:
    """`split_matrix` of the fields of `resolutions`."""
    return split_matrix(values, nulls, *field_bounds(resolutions))


def split_column(values: Float64s, nulls: Mask | None, resolution: Resolution) -> SplitColumn:
    """`split_columns` of one column."""
    absent = nulls if nulls is not None else np.zeros(len(values), np.bool_)
    ints, whole = split_columns(values[None, :], absent[None, :], [resolution])
    return SplitColumn(ints[0], ~whole[0], values, absent | whole[0])
