"""The daily grid of a course (clinical-spec §9.3): per analyte and threshold, each course day below,
not below, or unknown, and the interval counts, runs and "some result below" answers read from it.

Written here because it is ours: a three-valued calendar with the spec's gap filling has no library
equivalent. A day's state at threshold X is the state of the lowest value collected that day, which for
intervals is: below when some result is surely below, not below when every result surely is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from typing import Final, Literal

from service.clinical.hematotox import Span

# Day states, small ints because the grid is walked per day and threshold.
NOT: Final = 0  # surely not below X
BELOW: Final = 1  # surely below X
UNKNOWN: Final = 2

DayState = int  # NOT, BELOW or UNKNOWN
Tri = Literal["yes", "no", "unknown"]

MAX_GAP = 3  # b − a ≤ 3 between measured days a < d < b fills d (§9.3)


@dataclass(frozen=True)
class Threshold:
    """X in "below X". ``inclusive``: below means ≤ X (ANC 1.5: "not above 1.5"; exactly 1.5 is no recovery)."""

    value: Decimal
    inclusive: bool = False

    def state(self, span: Span) -> DayState:
        """Where a set of possible values stands against X."""
        x = self.value
        if self.inclusive:
            if span.hi <= x:
                return BELOW
            if span.lo > x or (span.lo == x and not span.lo_closed):
                return NOT
            return UNKNOWN
        if span.hi < x or (span.hi == x and not span.hi_closed):
            return BELOW
        if span.lo >= x:
            return NOT
        return UNKNOWN


ANC_THRESHOLDS: Final = (
    Threshold(Decimal("0.1")),
    Threshold(Decimal("0.5")),
    Threshold(Decimal("1.0")),
    Threshold(Decimal("1.5"), inclusive=True),
)
ANC_01, ANC_05, ANC_10, ANC_15 = 0, 1, 2, 3  # indexes into ANC_THRESHOLDS
PLT_THRESHOLDS: Final = (Threshold(Decimal(50)),)
HB_THRESHOLDS: Final = (Threshold(Decimal("8.0")),)
THRESHOLDS: Final = {"anc": ANC_THRESHOLDS, "platelets": PLT_THRESHOLDS, "hemoglobin": HB_THRESHOLDS}

States = tuple[DayState, ...]  # one state per threshold of the analyte


def combine(a: States, b: States) -> States:
    """Two results of one day → the state of their lower value, threshold by threshold."""
    return tuple(
        BELOW if x == BELOW or y == BELOW else NOT if x == NOT and y == NOT else UNKNOWN
        for x, y in zip(a, b, strict=True)
    )


def _shared(a: States, b: States) -> States:
    return tuple(x if x == y and x != UNKNOWN else UNKNOWN for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class AnalyteGrid:
    """Days 0..100 of one analyte: ``states[day][threshold]``; ``measured[day]`` when a result fell on it."""

    states: tuple[States, ...]
    measured: tuple[bool, ...]

    def count(self, t: int, first: int, last: int) -> tuple[int, int]:
        """(sure, sure + unknown) days below threshold ``t`` on days first..last."""
        sure = unknown = 0
        for s in self.states[first : last + 1]:
            if s[t] == BELOW:
                sure += 1
            elif s[t] == UNKNOWN:
                unknown += 1
        return sure, sure + unknown

    def longest_run(self, t: int, first: int, last: int) -> tuple[int, int]:
        """(longest run of sure days below ``t``, longest run of days below or unknown) in first..last."""
        sure = possible = best_sure = best_possible = 0
        for s in self.states[first : last + 1]:
            sure = sure + 1 if s[t] == BELOW else 0
            possible = possible + 1 if s[t] != NOT else 0
            best_sure, best_possible = max(best_sure, sure), max(best_possible, possible)
        return best_sure, best_possible

    def run_ending(self, t: int, day: int) -> tuple[int, int]:
        """(sure, possible) length of the run below ``t`` that ends on ``day``."""
        sure = possible = 0
        counting_sure = True
        for d in range(day, -1, -1):
            st = self.states[d][t]
            if st == NOT:
                break
            possible += 1
            if st == BELOW and counting_sure:
                sure += 1
            else:
                counting_sure = False
        return sure, possible

    def some_result_below(self, t: int, first: int, last: int, over: bool) -> Tri:
        """§9.3 last bullet, over the measured days (a measured day's state is its results' combined state):
        yes when a result is surely below; no when the window is ``over``, has results and all are surely
        not below; else unknown."""
        seen = False
        all_not = True
        for d in range(first, last + 1):
            if not self.measured[d]:
                continue
            seen = True
            st = self.states[d][t]
            if st == BELOW:
                return "yes"
            if st != NOT:
                all_not = False
        return "no" if over and seen and all_not else "unknown"

    def last_measured(self, last: int) -> int | None:
        return next((d for d in range(last, -1, -1) if self.measured[d]), None)


def at_least(bounds: tuple[int, int], k: int) -> Tri:
    """A count or run interval against "≥ k": yes on sure days alone, no even with every unknown day."""
    lo, hi = bounds
    return "yes" if lo >= k else "no" if hi < k else "unknown"


def build_grid(days: Iterable[tuple[int, States]], n_thresholds: int, horizon: int, length: int) -> AnalyteGrid:
    """The grid of days 0..length−1 from (course day, states) per result.

    Results on days outside 0..``horizon`` are not used (``horizon`` = min(today, the course's last day));
    those days, days in gaps longer than ``MAX_GAP`` and days before the first or after the last result
    are unknown for every threshold.
    """
    unknown: States = (UNKNOWN,) * n_thresholds
    by_day: dict[int, States] = {}
    for day, st in days:
        if 0 <= day <= horizon and day < length:
            prev = by_day.get(day)
            by_day[day] = st if prev is None else combine(prev, st)
    states: list[States] = [unknown] * length
    for d, st in by_day.items():
        states[d] = st
    measured_days = sorted(by_day)
    for a, b in pairwise(measured_days):
        if 1 < b - a <= MAX_GAP:
            fill = _shared(by_day[a], by_day[b])
            for d in range(a + 1, b):
                states[d] = fill
    measured = [False] * length
    for d in measured_days:
        measured[d] = True
    return AnalyteGrid(tuple(states), tuple(measured))


def bands(states: Sequence[States]) -> list[frozenset[int]]:
    """Each day's possible ANC bands for §9.5: 0 (< 0.5), 1 (0.5–< 1.0), 2 (1.0–1.5), 3 (> 1.5).

    Exact for a day's value that is one interval (a measured day's lowest value, or a filled day whose
    states are shared by two measured days, both monotone in the threshold).
    """
    out: list[frozenset[int]] = []
    for s in states:
        t05, t10, t15 = s[ANC_05], s[ANC_10], s[ANC_15]
        out.append(
            frozenset(
                b
                for b, ok in (
                    (0, t05 != NOT),
                    (1, t05 != BELOW and t10 != NOT),
                    (2, t10 != BELOW and t15 != NOT),
                    (3, t15 != BELOW),
                )
                if ok
            )
        )
    return out
