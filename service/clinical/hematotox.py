"""CAR-HEMATOTOX points, interval scoring and risk groups (clinical-spec §1.3, §1.4, §1.6).

Each analyte's points are a step function of its value, written as bands with explicit inclusive
ends, so that a value known only as an interval (missing, censored) gets exactly the set of
points consistent with it: no epsilon tricks at the cut-offs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, NamedTuple

INF = Decimal("Infinity")

HT_ANALYTES = ("anc", "hemoglobin", "platelets", "crp", "ferritin")


class Span(NamedTuple):
    """A set of real values: from ``lo`` to ``hi`` with each end open or closed. A NamedTuple (immutable,
    cheap to build: one per result read, see labs.LabResult)."""

    lo: Decimal
    hi: Decimal
    lo_closed: bool = True
    hi_closed: bool = True

    def meets(self, other: Span) -> bool:
        if self.lo > other.hi or other.lo > self.hi:
            return False
        if self.lo == other.hi and not (self.lo_closed and other.hi_closed):
            return False
        return not (other.lo == self.hi and not (other.lo_closed and self.hi_closed))

    @classmethod
    def point(cls, v: Decimal) -> Span:
        return cls(v, v)


def _bands(*rows: tuple[Span, int]) -> tuple[tuple[Span, int], ...]:
    return rows


# [SEED-M] wording, inclusive at the cut-offs; platelets (75, 175] for 1 point [DESIGN], ferritin
# 2000 scores 2 [DESIGN, flagged]. Spec §1.3 table, evaluated top-down.
INCLUSIVE = {
    "anc": _bands((Span(-INF, Decimal("1.2")), 1), (Span(Decimal("1.2"), INF, lo_closed=False), 0)),
    "hemoglobin": _bands((Span(-INF, Decimal("9.0")), 1), (Span(Decimal("9.0"), INF, lo_closed=False), 0)),
    "platelets": _bands(
        (Span(-INF, Decimal(75)), 2),
        (Span(Decimal(75), Decimal(175), lo_closed=False), 1),
        (Span(Decimal(175), INF, lo_closed=False), 0),
    ),
    "crp": _bands((Span(Decimal("3.0"), INF), 1), (Span(-INF, Decimal("3.0"), hi_closed=False), 0)),
    "ferritin": _bands(
        (Span(Decimal(2000), INF), 2),
        (Span(Decimal(650), Decimal(2000), hi_closed=False), 1),
        (Span(-INF, Decimal(650), hi_closed=False), 0),
    ),
}

# The strict signs recalled for the original Blood 2021 table [RECALLED, UNVERIFIED]; selectable
# by configuration (`inclusive_boundaries = false`) until someone checks the primary paper.
STRICT = {
    "anc": _bands((Span(-INF, Decimal("1.2"), hi_closed=False), 1), (Span(Decimal("1.2"), INF), 0)),
    "hemoglobin": _bands((Span(-INF, Decimal("9.0"), hi_closed=False), 1), (Span(Decimal("9.0"), INF), 0)),
    "platelets": _bands(
        (Span(-INF, Decimal(75), hi_closed=False), 2),
        (Span(Decimal(75), Decimal(175)), 1),
        (Span(Decimal(175), INF, lo_closed=False), 0),
    ),
    "crp": _bands((Span(Decimal("3.0"), INF, lo_closed=False), 1), (Span(-INF, Decimal("3.0")), 0)),
    "ferritin": _bands(
        (Span(Decimal(2000), INF, lo_closed=False), 2),
        (Span(Decimal(650), Decimal(2000)), 1),
        (Span(-INF, Decimal(650), hi_closed=False), 0),
    ),
}

# Values exactly at these points score differently under the two readings (spec §1.3 item 4).
CUTOFFS = {
    "anc": (Decimal("1.2"),),
    "hemoglobin": (Decimal("9.0"),),
    "platelets": (Decimal(75), Decimal(175)),
    "crp": (Decimal("3.0"),),
    "ferritin": (Decimal(650), Decimal(2000)),
}
MAX_POINTS = {"anc": 1, "hemoglobin": 1, "platelets": 2, "crp": 1, "ferritin": 2}


@dataclass(frozen=True)
class Points:
    min: int
    max: int


def points(analyte: str, values: Span | None, inclusive: bool = True) -> Points:
    """Points consistent with the set of values; ``None`` (missing) gives [0, max]."""
    if values is None:
        return Points(0, MAX_POINTS[analyte])
    table = (INCLUSIVE if inclusive else STRICT)[analyte]
    hit = [p for band, p in table if band.meets(values)]
    if not hit:  # only for an empty span; treat as unknown rather than as 0
        return Points(0, MAX_POINTS[analyte])
    return Points(min(hit), max(hit))


Group = Literal["low", "high", "indeterminate"]
UltraHigh = Literal["yes", "no", "possible"]


@dataclass(frozen=True)
class Score:
    min: int
    max: int
    group: Group
    ultra_high: UltraHigh
    # Analytes whose own interval is open, listed only when they keep the group undecided.
    could_change_group: tuple[str, ...] = ()


def score(components: Iterable[tuple[str, Points]]) -> Score:
    comps = list(components)
    s_min = sum(p.min for _, p in comps)
    s_max = sum(p.max for _, p in comps)
    if s_min >= 2:
        group: Group = "high"
    elif s_max <= 1:
        group = "low"
    else:
        group = "indeterminate"
    ultra: UltraHigh = "yes" if s_min >= 5 else "no" if s_max < 5 else "possible"
    open_ = tuple(a for a, p in comps if p.max > p.min) if group == "indeterminate" else ()
    return Score(s_min, s_max, group, ultra, open_)
