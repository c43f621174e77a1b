"""Which follow-up items of clinical-spec §9.6 (F1–F5) apply to a live course: pure rules, no cards.

The course itself (grid, measures, current run, latest results) is `course.py`'s; this module only
reads a `CourseResult`, the HT group at LD and the patient's G-CSF orders and administrations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta, tzinfo
from decimal import Decimal
from typing import Any, Literal

from service.clinical.course import Course, CourseResult, result_below
from service.clinical.labs import local_day, parse_fhir_datetime
from service.clinical.medications import belongs_to, drug_in_class
from service.clinical.recommendations import Strength
from service.clinical.valuesets import ValueSets

ItemId = Literal["F1", "F2", "F3", "F4", "F5"]
ITEM_ORDER: tuple[ItemId, ...] = ("F1", "F2", "F3", "F4", "F5")
SEVERE = Decimal("0.5")  # ANC ×10⁹/L
APLASTIC_RUN_DAYS = 14  # F3: the aplastic pattern of §9.5, not a site setting
F1_RECENT_DAYS = 2  # F1: the latest ANC collected today or in the 2 calendar days before
GCSF_DAYS = (2, 30)  # F4: course days +2 .. +30
GCSF_ORDER_FROM_DAY = -14  # F4: orders authored from day −14 on count

# A G-CSF order that was never really placed does not count as "ordered"; one that was stopped or
# completed was (the drug was started). An administration counts unless it did not happen.
_NOT_ORDERED = frozenset({"draft", "cancelled", "entered-in-error", "revoked"})
_NOT_GIVEN = frozenset({"not-done", "entered-in-error"})

BASE_STRENGTH: dict[ItemId, Strength] = {"F1": "G", "F2": "G", "F3": "P", "F4": "G", "F5": "X"}
# The §4 recommendation each item carries into the course: a site that switched one off
# ([recommendations] disabled) does not get it after infusion either.
RECOMMENDATION_OF: dict[ItemId, str] = {"F1": "R2", "F2": "R9", "F3": "R4", "F4": "R1", "F5": "R12"}


@dataclass(frozen=True)
class FollowUpRules:
    """The site's settings for §9.6 ([follow_up] in the configuration)."""

    prolonged_run_days: int = 7  # F2 [DESIGN, configurable]
    cbc_high_early_days: int = 3  # F5 HT-high, days 0–30 [EXTRAPOLATION]
    cbc_high_late_days: int = 8  # F5 HT-high, days 31–90
    cbc_low_early_days: int = 7  # F5 otherwise, days 0–30
    # An indeterminate HT group counts as HT-high for F1/F4 (strength X), as for the order hooks.
    indeterminate_as_high: bool = False
    # Item ids switched off by the site: F1–F5 themselves, or the §4 ids they carry (R2, R9, R4, R1, R12).
    disabled: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Item:
    id: ItemId
    strength: Strength  # X when it applies only because an indeterminate group is treated as high


@dataclass(frozen=True)
class CbcDue:
    """Why F5 applies: the latest ANC's age in days (None: no ANC since day −14) and the interval."""

    age_days: int | None
    interval_days: int


def cbc_interval(group: str, day: int, rules: FollowUpRules) -> int | None:
    """F5's interval on course day ``day``; None when no reminder applies that day.

    An indeterminate group takes the HT-high intervals: more frequent counts are the safe side.
    """
    if group in ("high", "indeterminate"):
        if 0 <= day <= 30:
            return rules.cbc_high_early_days
        if 31 <= day <= 90:
            return rules.cbc_high_late_days
        return None
    return rules.cbc_low_early_days if 0 <= day <= 30 else None


def cbc_due(result: CourseResult, group: str, rules: FollowUpRules) -> CbcDue | None:
    interval = cbc_interval(group, result.day, rules)
    if interval is None:
        return None
    latest = result.latest.get("anc")
    age = None if latest is None else result.day - latest.day
    return CbcDue(age, interval) if age is None or age > interval else None


def gcsf_in_course(
    resources: Iterable[dict[str, Any]], course: Course, today: date, patient_id: str, vs: ValueSets, tz: tzinfo
) -> bool:
    """F4's "G-CSF ordered (authored from day −14 on) or given in the course" (up to today).

    An order or administration without a readable date does not count: it might belong to an
    earlier treatment, and F4 then shows (a reminder too many, never one too few).
    """
    first_order_day = course.day0 + timedelta(days=GCSF_ORDER_FROM_DAY)
    for r in resources:
        if not isinstance(r, dict) or not belongs_to(r, patient_id):
            continue
        rtype, status = r.get("resourceType"), r.get("status")
        if rtype == "MedicationAdministration":
            if isinstance(status, str) and status in _NOT_GIVEN:
                continue
            period = r.get("effectivePeriod")
            raw = r.get("effectiveDateTime") or (period.get("start") if isinstance(period, dict) else None)
            lo = course.day0
        elif rtype in ("MedicationRequest", "MedicationOrder"):
            if isinstance(status, str) and status in _NOT_ORDERED:
                continue
            raw = r.get("authoredOn") or r.get("dateWritten")  # R4, DSTU2
            lo = first_order_day
        else:
            continue
        parsed = parse_fhir_datetime(raw, tz) if isinstance(raw, str) else None
        if parsed is None:
            continue
        when, date_only = parsed
        day = local_day(when, date_only, tz)
        if lo <= day <= min(today, course.last) and drug_in_class(r, [], vs, "gcsf"):
            return True
    return False


def applicable_items(result: CourseResult, group: str, gcsf: bool, rules: FollowUpRules) -> list[Item]:
    """The §9.6 items for this course today, in F1..F5 order; [] = no card."""
    high = group == "high" or (group == "indeterminate" and rules.indeterminate_as_high)
    extrapolated = group != "high"  # F1/F4 for an indeterminate group treated as high: X
    items: list[Item] = []

    def add(item_id: ItemId, extrapolated: bool = False) -> None:
        if item_id in rules.disabled or RECOMMENDATION_OF[item_id] in rules.disabled:
            return
        items.append(Item(item_id, "X" if extrapolated else BASE_STRENGTH[item_id]))

    anc = result.latest.get("anc")
    if (
        high
        and anc is not None
        and 0 <= result.day - anc.day <= F1_RECENT_DAYS
        and result_below(anc.result, SEVERE) == "yes"
    ):
        add("F1", extrapolated)
    run = result.current_severe_run.min
    if run >= rules.prolonged_run_days:
        add("F2")
    if run >= APLASTIC_RUN_DAYS:
        add("F3")
    if high and GCSF_DAYS[0] <= result.day <= GCSF_DAYS[1] and not gcsf:
        add("F4", extrapolated)
    if cbc_due(result, group, rules) is not None:
        add("F5")
    return items
