"""Safety properties of the score, over generated patients (hypothesis).

- making any lab worse never lowers the score;
- removing a value never turns a non-LOW result into LOW;
- unit-equivalent inputs give equal scores.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from service.clinical.assessment import assess_patient
from service.clinical.labs import LabRules
from service.clinical.orders import find_trigger
from service.clinical.valuesets import value_sets
from tests.cases import ld_orders, obs

VS = value_sets()
RULES = LabRules(tz=ZoneInfo("UTC"))
ORDERS = ld_orders("p")
TRIGGER = find_trigger(ORDERS, ORDERS, "p", VS, datetime.now(UTC), RULES.tz)

CODES = {
    "anc": ("751-8", "10*9/L"),
    "hemoglobin": ("718-7", "g/dL"),
    "platelets": ("777-3", "10*9/L"),
    "crp": ("1988-5", "mg/dL"),
    "ferritin": ("2276-4", "ng/mL"),
}
# Which way is worse: lower counts, higher inflammation markers.
WORSE_IS_LOWER = {"anc": True, "hemoglobin": True, "platelets": True, "crp": False, "ferritin": False}
RANGES = {"anc": (0, 20), "hemoglobin": (3, 20), "platelets": (0, 600), "crp": (0, 40), "ferritin": (0, 9000)}


def dec(lo: int, hi: int):
    return st.decimals(min_value=lo, max_value=hi, places=2, allow_nan=False, allow_infinity=False)


labs = st.fixed_dictionaries({a: st.one_of(st.none(), dec(*RANGES[a])) for a in CODES})


def run(values: dict[str, Decimal | None], units: dict[str, tuple[str, Decimal]] | None = None):
    observations = []
    for a, v in values.items():
        if v is None:
            continue
        code, unit = CODES[a]
        if units and a in units:
            unit, mult = units[a]
            v = v * mult
        observations.append(obs(a, code, float(v), unit, patient="p"))
    return assess_patient(TRIGGER, observations, "p", VS, RULES).confirmed


@settings(max_examples=300, deadline=None)
@given(labs, st.sampled_from(list(CODES)), dec(0, 500))
def test_worse_lab_never_lowers_the_score(values, analyte, delta):
    before = run(values)
    v = values[analyte]
    if v is None:
        return
    lo, hi = RANGES[analyte]
    worse = max(Decimal(lo), v - delta) if WORSE_IS_LOWER[analyte] else min(Decimal(hi), v + delta)
    after = run({**values, analyte: worse})
    assert after.min >= before.min and after.max >= before.max
    rank = {"low": 0, "indeterminate": 1, "high": 2}
    assert rank[after.group] >= rank[before.group]


@settings(max_examples=300, deadline=None)
@given(labs, st.sampled_from(list(CODES)))
def test_removing_a_value_never_makes_low(values, analyte):
    before = run(values)
    after = run({**values, analyte: None})
    if before.group != "low":
        assert after.group != "low"
    assert after.min <= before.min and after.max >= before.max


ALT_UNITS = {
    "anc": ("/uL", Decimal(1000)),
    "hemoglobin": ("g/L", Decimal(10)),
    "platelets": ("/uL", Decimal(1000)),
    "crp": ("mg/L", Decimal(10)),
    "ferritin": ("ug/L", Decimal(1)),
}


@settings(max_examples=300, deadline=None)
@given(labs)
def test_unit_equivalent_inputs_score_equally(values):
    assert run(values) == run(values, ALT_UNITS)
