"""The neutrophil recovery phenotype of clinical-spec §9.5, with its exact candidates.

Each day 0–60 carries the set of ANC bands it may be in (one band on a known day, several on an
unknown or censored one). Walking the days with the *set* of reachable automaton states gives exactly
the phenotypes some assignment of bands could produce, in time linear in the days: the state space is
small (5 phases × a run capped at 14, plus "aplastic seen", which decides alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

PhenotypeName = Literal["quick", "intermittent", "aplastic", "unclassified"]
# The order candidates are listed in.
PHENOTYPES: Final[tuple[PhenotypeName, ...]] = ("quick", "intermittent", "aplastic", "unclassified")

LAST_DAY: Final = 60
APLASTIC_RUN: Final = 14  # consecutive days with ANC < 0.5
LATE_DIP_FROM: Final = 22  # "after day 21"

# Phases.
BEFORE, DIPPED, RECOVERED, SECOND_EARLY, SECOND_LATE = 0, 1, 2, 3, 4
_APLASTIC: Final = (-1, 0)  # one absorbing state: aplastic takes precedence over the rest

State = tuple[int, int]  # (phase, current run of ANC < 0.5 capped at APLASTIC_RUN)
_DIP = frozenset({0, 1})  # bands below 1.0


def _phase(phase: int, day: int, band: int) -> int:
    if phase == BEFORE:
        return DIPPED if band in _DIP else BEFORE
    if phase == DIPPED:
        return RECOVERED if band == 3 else DIPPED
    if phase == RECOVERED:
        if band in _DIP:
            return SECOND_LATE if day >= LATE_DIP_FROM else SECOND_EARLY
        return RECOVERED
    if phase == SECOND_EARLY:
        return SECOND_LATE if band in _DIP and day >= LATE_DIP_FROM else SECOND_EARLY
    return SECOND_LATE


def _step(state: State, day: int, band: int) -> State:
    if state == _APLASTIC:
        return state
    phase, run = state
    run = run + 1 if band == 0 else 0
    if run >= APLASTIC_RUN:
        return _APLASTIC
    return _phase(phase, day, band), run


def _name(state: State) -> PhenotypeName:
    phase = state[0]
    if state == _APLASTIC:
        return "aplastic"
    if phase == SECOND_LATE:
        return "intermittent"
    if phase in (BEFORE, RECOVERED):
        return "quick"
    return "unclassified"  # dipped and never recovered, or a second dip before day 22 only


def candidates(day_bands: Sequence[frozenset[int]]) -> tuple[PhenotypeName, ...]:
    """The phenotypes reachable over days 0..60; ``day_bands[d]`` = the bands day d may be in
    (0: < 0.5, 1: 0.5–< 1.0, 2: 1.0–1.5, 3: > 1.5). Days beyond the sequence count as any band."""
    every = frozenset({0, 1, 2, 3})
    states: set[State] = {(BEFORE, 0)}
    for day in range(LAST_DAY + 1):
        options = day_bands[day] if day < len(day_bands) and day_bands[day] else every
        states = {_step(s, day, b) for s in states for b in options}
    names = {_name(s) for s in states}
    return tuple(p for p in PHENOTYPES if p in names)
