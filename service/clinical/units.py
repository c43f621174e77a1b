"""Unit strings → canonical units with exact decimal factors (clinical-spec §6).

Written by hand on purpose: a general UCUM library would parse the lab string "G/L" as gauss per
litre and would happily convert RBC-scale units for a neutrophil count. The clinical table is
small, closed and must be audited line by line, so it lives here as data.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache

UCUM = "http://unitsofmeasure.org"

CANONICAL: dict[str, str] = {
    "anc": "10*9/L",
    "wbc": "10*9/L",
    "platelets": "10*9/L",
    "seg_abs": "10*9/L",
    "band_abs": "10*9/L",
    "neut_pct": "%",
    "seg_pct": "%",
    "band_pct": "%",
    "hemoglobin": "g/dL",
    "crp": "mg/dL",
    "ferritin": "ng/mL",
    "ldh": "U/L",
    "creatinine": "mg/dL",
}

_ONE = Decimal(1)
_PER_THOUSAND = Decimal("0.001")

# Factor into the canonical unit, per unit family. `None` = the unit is known but must not be
# used (a mis-mapped code, or a molar factor that is UNVERIFIED unless a site configures it).
_COUNT = {
    "10*9/L": _ONE,
    "10*3/uL": _ONE,
    "/nL": _ONE,
    "10*3/mm3": _ONE,
    "/uL": _PER_THOUSAND,
    "/mm3": _PER_THOUSAND,
    "{cells}/uL": _PER_THOUSAND,
    "10*6/L": _PER_THOUSAND,
    # RBC-scale units on a leukocyte/platelet code: the code or the unit is wrong.
    "10*6/uL": None,
    "10*12/L": None,
}
_PERCENT = {"%": _ONE}
# An entry is a multiplier, or (numerator, denominator) where the factor is a division.
Factor = Decimal | tuple[Decimal, Decimal]
_FAMILIES: dict[str, Mapping[str, Factor | None]] = {
    "count": _COUNT,
    "percent": _PERCENT,
    "hemoglobin": {
        "g/dL": _ONE,
        "g/100mL": _ONE,
        "g/L": Decimal("0.1"),
        "mg/dL": _PER_THOUSAND,
        # Hb monomer (Fe basis): 1 mmol/L = 1.611 g/dL (spec §6.1, cases T7/T8).
        "mmol/L": Decimal("1.611"),
    },
    "crp": {"mg/dL": _ONE, "mg/L": Decimal("0.1"), "ug/mL": Decimal("0.1"), "nmol/L": None},
    "ferritin": {"ng/mL": _ONE, "ug/L": _ONE, "mg/L": Decimal(1000), "pmol/L": None},
    # 1 U = 1 umol/min = 1/60 ukat, so 1 nkat/L = 0.06 U/L exactly (the spec's ÷16.667 rounded).
    "ldh": {"U/L": _ONE, "[IU]/L": _ONE, "ukat/L": Decimal(60), "nkat/L": Decimal("0.06")},
    "creatinine": {
        "mg/dL": _ONE,
        "mg/L": Decimal("0.1"),
        # Divide, not multiply by a rounded reciprocal: 88.4 umol/L must be exactly 1 mg/dL.
        "umol/L": (_ONE, Decimal("88.4")),
        "mmol/L": (Decimal(1000), Decimal("88.4")),
    },
}
_FAMILY_OF = {
    "anc": "count",
    "wbc": "count",
    "platelets": "count",
    "seg_abs": "count",
    "band_abs": "count",
    "neut_pct": "percent",
    "seg_pct": "percent",
    "band_pct": "percent",
    "hemoglobin": "hemoglobin",
    "crp": "crp",
    "ferritin": "ferritin",
    "ldh": "ldh",
    "creatinine": "creatinine",
}

# Lab-feed strings that are not UCUM (spec §6.3). Looked up before UCUM so that "G/L" (giga per
# litre in lab speak, gauss per litre in UCUM) can never take the UCUM meaning.
_ALIASES = {
    "k/ul": "10*3/uL",
    "x10e3/ul": "10*3/uL",
    "10^3/ul": "10*3/uL",
    "thou/ul": "10*3/uL",
    "10³/ul": "10*3/uL",
    "10*3/ul": "10*3/uL",
    "x10^3/ul": "10*3/uL",
    "x10e9/l": "10*9/L",
    "10^9/l": "10*9/L",
    "gpt/l": "10*9/L",
    "/nl": "10*9/L",
    "x10^9/l": "10*9/L",
    "cells/ul": "/uL",
    "/ul": "/uL",
    "/cmm": "/uL",
    "iu/l": "U/L",
    "ug/l": "ug/L",
    "mcg/l": "ug/L",
    "g/dl": "g/dL",
}
# Every canonical spelling, reachable case-insensitively: no two units in these tables differ
# only by case, so folding case cannot change a meaning.
_CANONICAL_SPELLING = {u.lower(): u for fam in _FAMILIES.values() for u in fam}


class UnitRejected(ValueError):
    """The unit is unknown, or known and not usable for this analyte."""


def normalise_unit(text: str | None, analyte: str) -> str:
    """Map a unit string (UCUM code or lab-feed text) to a unit of this analyte's table."""
    if not isinstance(text, str) or not text.strip():
        raise UnitRejected("no unit")
    unit = _lookup(text, analyte)
    if unit is None:
        raise UnitRejected("unit not accepted for this analyte")
    return unit


@lru_cache(maxsize=1024)  # a feed repeats a handful of unit strings; the cache is bounded against junk
def _lookup(text: str, analyte: str) -> str | None:
    key = text.strip().replace("µ", "u").replace("μ", "u").lower()
    if key == "g/l" and _FAMILY_OF[analyte] == "count":
        # "G/L" means 10^9/L on a count; for Hb it really is grams per litre.
        return "10*9/L"
    unit = _ALIASES.get(key) or _CANONICAL_SPELLING.get(key)
    if unit is None or unit not in _FAMILIES[_FAMILY_OF[analyte]]:
        return None
    return unit


def factor(analyte: str, unit: str, configured: Mapping[str, Decimal] | None = None) -> Factor:
    """The exact factor from ``unit`` into the canonical unit of ``analyte``.

    ``configured`` holds site factors keyed "analyte:unit" for the units the spec leaves unusable
    by default (molar CRP and ferritin: factors UNVERIFIED, spec §6.1).
    """
    f = _FAMILIES[_FAMILY_OF[analyte]][unit]
    if f is None and configured:
        f = configured.get(f"{analyte}:{unit}")
    if f is None:
        raise UnitRejected("unit not usable for this analyte")
    return f


def to_canonical(
    analyte: str, value: Decimal, unit_text: str | None, configured: Mapping[str, Decimal] | None = None
) -> Decimal:
    unit = normalise_unit(unit_text, analyte)
    f = factor(analyte, unit, configured)
    if isinstance(f, tuple):
        return value * f[0] / f[1]
    return value * f


# Plausible ranges in canonical units, inclusive (spec §6.2). Outside → `implausible`, treated as
# missing: they catch unit mislabels such as ANC 1200 labelled 10*3/uL.
PLAUSIBLE: dict[str, tuple[Decimal, Decimal]] = {
    "anc": (Decimal(0), Decimal(100)),
    "seg_abs": (Decimal(0), Decimal(100)),
    "band_abs": (Decimal(0), Decimal(100)),
    # WBC is not in the spec's table [DESIGN]: 200 x10^9/L is far above any count seen before
    # lymphodepletion, and a tighter guard catches /uL values mislabelled 10*3/uL before they are
    # multiplied into an ANC.
    "wbc": (Decimal(0), Decimal(200)),
    "neut_pct": (Decimal(0), Decimal(100)),
    "seg_pct": (Decimal(0), Decimal(100)),
    "band_pct": (Decimal(0), Decimal(100)),
    "hemoglobin": (Decimal(2), Decimal(25)),
    "platelets": (Decimal(0), Decimal(2000)),
    "crp": (Decimal(0), Decimal(100)),
    "ferritin": (Decimal(0), Decimal(200000)),
    "ldh": (Decimal(20), Decimal(20000)),
    "creatinine": (Decimal("0.1"), Decimal(25)),
}


def is_plausible(analyte: str, value: Decimal) -> bool:
    lo, hi = PLAUSIBLE[analyte]
    return lo <= value <= hi
