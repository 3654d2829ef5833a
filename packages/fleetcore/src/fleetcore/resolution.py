"""The resolution of every measured value: one table for the protocol, storage and docs.

Each of the 24 value fields has a unit and the resolution an Acuvim-class meter reports it at
(Accuenergy's Acuvim II register scaling: U = Rx/10 V, I = Rx/1000 A, P/Q/S = Rx W/var/VA,
PF = Rx/1000, F = Rx/100 Hz, energy (primary) = Rx/10 kWh/kvarh, THD = Rx/10000 x 100 %).
A value at its resolution is a whole number of steps, `k / 10**decimals`; the central database
keeps such a value as the integer `k` (`storage_type`), which compresses to a byte or two where
the float's 52 noisy mantissa bits cost 5-8.

The resolution is what a value usually carries, not a limit: a value finer than it (a meter
with more digits, a computed average, -0.0) is accepted and stored exactly as sent, beside the
integers. `is_whole_steps` is the test, on the float's bits: `k / 10**decimals` must give back
exactly the double that was sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fleetcore.schemas import MEASUREMENT_VALUE_FIELDS

__all__ = ["RESOLUTIONS", "Resolution", "is_whole_steps", "scaled_or_none"]

_INT4_MAX = 2**31 - 1
_EXACT_FLOAT_INT = 2**53  # integers up to this convert to float64 exactly


@dataclass(frozen=True, slots=True)
class Resolution:
    """A value field's unit and resolution (`10**-decimals` units)."""

    field: str
    unit: str
    decimals: int
    storage_type: str  # the central column's SQL type for `k`: "integer" or "bigint"

    @property
    def step(self) -> str:
        """The resolution as text ("0.001"), for docs and schemas."""
        return f"{10**-self.decimals:.{self.decimals}f}" if self.decimals else "1"

    @property
    def factor(self) -> float:
        """10**decimals as an exact float (from the integer, not pow())."""
        return float(10**self.decimals)

    @property
    def max_steps(self) -> int:
        """The largest |k| the storage column holds (and converts back to a float exactly)."""
        return _INT4_MAX if self.storage_type == "integer" else _EXACT_FLOAT_INT


def _fields(
    names: str, unit: str, decimals: int, storage_type: str = "integer"
) -> list[Resolution]:
    return [Resolution(name, unit, decimals, storage_type) for name in names.split()]


RESOLUTIONS: Mapping[str, Resolution] = MappingProxyType(
    {
        r.field: r
        for r in (
            *_fields("v1 v2 v3 v12 v23 v31", "V", 1),
            *_fields("i1 i2 i3 i_n", "A", 3),
            *_fields("p1 p2 p3 p_total", "kW", 3),
            *_fields("q_total", "kvar", 3),
            *_fields("s_total", "kVA", 3),
            *_fields("pf_total", "", 3),
            *_fields("freq", "Hz", 2),
            *_fields("energy_imp_kwh energy_exp_kwh", "kWh", 1, "bigint"),
            *_fields("energy_q_imp_kvarh energy_q_exp_kvarh", "kvarh", 1, "bigint"),
            *_fields("thd_v thd_i", "%", 2),
        )
    }
)
assert tuple(RESOLUTIONS) == MEASUREMENT_VALUE_FIELDS


def scaled_or_none(value: float, resolution: Resolution) -> int | None:
    """`k` when `value` is exactly `k / 10**decimals` (bit for bit, so never for -0.0) and `k`
    fits the storage column; None when the value must be kept as sent."""
    if not math.isfinite(value):
        return None
    steps = round(value * resolution.factor)
    if abs(steps) > resolution.max_steps:
        return None
    back = steps / resolution.factor  # int / float: the int converts exactly (|k| <= 2**53)
    if back != value or math.copysign(1.0, back) != math.copysign(1.0, value):
        return None
    return steps


def is_whole_steps(value: float, resolution: Resolution) -> bool:
    return scaled_or_none(value, resolution) is not None
