"""One patient's CAR-HEMATOTOX assessment at LD start: the pure heart of the service.

Labs in, score out; no I/O. The confirmed result uses only labs of the 3-day window; the
provisional one also uses stale labs and is never presented as the confirmed group (spec §1.5).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from service.clinical.hematotox import CUTOFFS, HT_ANALYTES, Points, Score, score
from service.clinical.labs import Component, LabRules, ParsedLabs, assess_all
from service.clinical.orders import Trigger
from service.clinical.valuesets import ValueSets

# Bumped whenever a rule that changes a result changes; printed on every card and extension.
RULES_VERSION = "1.2.1"


def ruleset_version(vs: ValueSets) -> str:
    return f"{RULES_VERSION}+valuesets.{vs.version}"


@dataclass(frozen=True)
class Assessment:
    trigger: Trigger
    components: dict[str, Component]
    confirmed: Score
    provisional: Score | None
    flags: tuple[str, ...]


def _flags(trigger: Trigger, comps: dict[str, Component]) -> tuple[str, ...]:
    flags: list[str] = []
    if trigger.t0_assumed:
        flags.append("t0-assumed")
    if trigger.t0_date_only:
        flags.append("t0-date-only")
    if not trigger.validated_context:
        flags.append("not-validated-for-regimen")
    for a in HT_ANALYTES:
        if comps[a].untrusted is not None:
            flags.append(f"untrusted:{a}")  # a result to repeat: its number cannot be trusted (spec §1.5)
        if comps[a].tied:
            flags.append(f"tie:{a}")  # points from several results collected at the same time
        r = comps[a].used
        if r is None:
            continue
        if r.comparator is None and r.value in CUTOFFS[a]:
            # Scores differently under the recalled strict original table (spec §1.3 item 4).
            flags.append(f"at-cutoff:{a}")
        if a == "ferritin" and r.comparator is None and r.value == 2000:
            flags.append("boundary-ambiguity:ferritin")
        if r.timing_imprecise:
            flags.append(f"timing-imprecise:{a}")
    return tuple(flags)


def _ht_points(points: Points | None) -> Points:
    """An HT analyte's points: labs._assess gives them to every analyte of MAX_POINTS."""
    assert points is not None
    return points


def assess_patient(
    trigger: Trigger,
    observations: Iterable[dict[str, Any]] | ParsedLabs,
    patient_id: str,
    vs: ValueSets,
    rules: LabRules,
    extra_analytes: tuple[str, ...] = (),
) -> Assessment:
    comps = assess_all(observations, patient_id, trigger.t0, vs, rules, HT_ANALYTES + extra_analytes)
    confirmed = score((a, _ht_points(comps[a].confirmed)) for a in HT_ANALYTES)
    provisional = None
    if any(comps[a].status == "stale" for a in HT_ANALYTES):
        provisional = score((a, _ht_points(comps[a].provisional)) for a in HT_ANALYTES)
    return Assessment(trigger, comps, confirmed, provisional, _flags(trigger, comps))
