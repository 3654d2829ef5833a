"""The resolution table: one entry per value field, Acuvim-class steps, an exact whole-steps test."""

from __future__ import annotations

import math

from fleetcore import MEASUREMENT_VALUE_FIELDS
from fleetcore.resolution import RESOLUTIONS, scaled_or_none

# Accuenergy's Acuvim II register scaling (primary values): U = Rx/10 V, I = Rx/1000 A,
# P/Q/S = Rx W/var/VA (kW here: 0.001), PF = Rx/1000, F = Rx/100 Hz, E = Rx/10 kWh/kvarh,
# THD = Rx/10000 x 100 %.
ACUVIM_STEPS = {
    **dict.fromkeys(("v1", "v2", "v3", "v12", "v23", "v31"), ("0.1", "V")),
    **dict.fromkeys(("i1", "i2", "i3", "i_n"), ("0.001", "A")),
    **dict.fromkeys(("p1", "p2", "p3", "p_total"), ("0.001", "kW")),
    "q_total": ("0.001", "kvar"),
    "s_total": ("0.001", "kVA"),
    "pf_total": ("0.001", ""),
    "freq": ("0.01", "Hz"),
    **dict.fromkeys(("energy_imp_kwh", "energy_exp_kwh"), ("0.1", "kWh")),
    **dict.fromkeys(("energy_q_imp_kvarh", "energy_q_exp_kvarh"), ("0.1", "kvarh")),
    **dict.fromkeys(("thd_v", "thd_i"), ("0.01", "%")),
}


def test_every_value_field_has_the_acuvim_resolution() -> None:
    """Each of the 24 value fields, in protocol order, has the step and unit an Acuvim II reports."""
    assert tuple(RESOLUTIONS) == MEASUREMENT_VALUE_FIELDS
    assert {f: (r.step, r.unit) for f, r in RESOLUTIONS.items()} == ACUVIM_STEPS


def test_whole_steps_and_values_that_are_not() -> None:
    """A decimal at the resolution is its integer steps; finer values, -0.0 and values past the
    integer column's range are not."""
    v1, energy = RESOLUTIONS["v1"], RESOLUTIONS["energy_imp_kwh"]
    assert scaled_or_none(230.4, v1) == 2304
    assert scaled_or_none(0.0, v1) == 0
    assert scaled_or_none(-0.0, v1) is None
    assert scaled_or_none(230.45, v1) is None
    assert scaled_or_none(math.nextafter(230.4, math.inf), v1) is None
    assert scaled_or_none(5e-324, v1) is None
    assert scaled_or_none(214748364.7, v1) == 2**31 - 1
    assert scaled_or_none(214748364.8, v1) is None
    assert scaled_or_none(123456789012.3, energy) == 1234567890123
    assert scaled_or_none(1e15, energy) is None  # 1e16 steps: past 2**53
