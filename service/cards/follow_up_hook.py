"""The `hematotox-follow-up` service (patient-view during a course): its two stages, as pure functions.

Stage 1 is the only thing an EHR is asked to prefetch on every chart open: the patient's CAR-T
product administrations (and, where a site records infusions as Procedures, those). No course that
contains today → no cards, and nothing else is read. Stage 2, for a patient in a course only, names
what the course needs (labs from before LD to today, LD-drug and G-CSF orders and administrations)
as searches bounded by the course's day 0: the app takes them from the prefetch when a client sent
them, else from `fhirServer`. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta, tzinfo
from typing import Any

from cds_hooks.models import Card
from service.cards.follow_up_card import FollowUpView, follow_up_card
from service.cards.suggestions import Drug
from service.clinical.assessment import assess_patient, ruleset_version
from service.clinical.course import Course, course_for, course_result, infusions, ld_start, ld_trigger
from service.clinical.follow_up import FollowUpRules, applicable_items, gcsf_in_course
from service.clinical.labs import LabRules
from service.clinical.valuesets import LOINC, RXNORM, ValueSets

INFUSION_KEY = "cartInfusions"
INFUSION_PROCEDURE_KEY = "cartInfusionProcedures"
# Stage 2: labs of the daily grid (before LD to today), labs of the HT score only (before LD),
# and the medications (LD drugs and G-CSF in one search per resource type).
GRID_LAB_KEYS = ("anc", "hemoglobin", "platelets")
LD_LAB_KEYS = ("crp", "ferritin")
ADMINISTRATIONS_KEY = "courseAdministrations"
ORDERS_KEY = "courseOrders"
COURSE_KEYS = (*GRID_LAB_KEYS, *LD_LAB_KEYS, ADMINISTRATIONS_KEY, ORDERS_KEY)

LD_WINDOW_DAYS = 14  # the LD start is looked for on course days −14..0 (§9.2)
# Days of slack on every date bound: facility calendar days, date-only values and offsets can move a
# resource's day by one either way, and a search bound that is too wide only costs a few resources.
MARGIN_DAYS = 2
# LD orders are authored some time before their planned start; an order authored this long before
# day 0 cannot plan an LD start on days −14..0 in practice [DESIGN].
ORDER_AUTHORED_DAYS = 100
_COUNTS = {"anc": 500, ADMINISTRATIONS_KEY: 200}  # a differential is ~7 results per draw
_DEFAULT_COUNT = 200


@dataclass(frozen=True)
class FollowUp:
    """The site's configuration of the follow-up service, read once at start-up (service/web/site.py)."""

    rules: FollowUpRules = field(default_factory=FollowUpRules)
    # Only drugs the site configured get a one-click draft (keys "fluoroquinolone", "azole", "gcsf").
    drugs: Mapping[str, Drug] = field(default_factory=dict)
    procedure_codes: frozenset[tuple[str, str]] = frozenset()
    infusion_count: int = 10


def _codes(system: str, codes: Iterable[str]) -> str:
    return ",".join(f"{system}|{c}" for c in sorted(set(codes)))


def infusion_templates(vs: ValueSets, follow_up: FollowUp) -> dict[str, str]:
    """The discovery prefetch: what tells whether the patient is in a course, and nothing more.

    No date filter: prefetch tokens have no date arithmetic ({{today()}} is STU, some clients send
    null for it), and a fixed date would go stale. Newest first with a small count instead: a patient
    has one or two infusions, and the last 100 days are picked in our code.
    """
    n = follow_up.infusion_count
    out = {
        INFUSION_KEY: (
            f"MedicationAdministration?patient={{{{context.patientId}}}}&code={_codes(RXNORM, vs.product_rxnorm)}"
            f"&_sort=-effective-time&_count={n}"
        )
    }
    if follow_up.procedure_codes:
        codes = ",".join(f"{s}|{c}" for s, c in sorted(follow_up.procedure_codes))
        out[INFUSION_PROCEDURE_KEY] = f"Procedure?patient={{{{context.patientId}}}}&code={codes}&_sort=-date&_count={n}"
    return out


def find_course(
    stage1: Mapping[str, list[dict[str, Any]]],
    patient_id: str,
    vs: ValueSets,
    tz: tzinfo,
    follow_up: FollowUp,
    today: date,
) -> tuple[Course | None, tuple[str, ...]]:
    """The course that contains today (None: not in a course, no cards) and the infusion flags."""
    resources = [r for key in (INFUSION_KEY, INFUSION_PROCEDURE_KEY) for r in stage1.get(key, ())]
    infs, flags = infusions(resources, patient_id, vs, tz, follow_up.procedure_codes)
    return course_for(infs, today), flags


def course_templates(course: Course, vs: ValueSets, lookback_days: int, today: date) -> dict[str, str]:
    """Stage 2 for one course, bounded by its day 0 (known now, so plain dates are fine here)."""
    ld_from = course.day0 - timedelta(days=LD_WINDOW_DAYS + MARGIN_DAYS)
    labs_from = (ld_from - timedelta(days=lookback_days)).isoformat()
    ld_until = (course.day0 + timedelta(days=MARGIN_DAYS)).isoformat()
    out: dict[str, str] = {}
    for key in (*GRID_LAB_KEYS, *LD_LAB_KEYS):
        until = f"&date=le{ld_until}" if key in LD_LAB_KEYS else ""
        out[key] = (
            f"Observation?patient={{{{context.patientId}}}}&code={_codes(LOINC, vs.prefetch_codes[key])}"
            f"&date=ge{labs_from}{until}&_sort=-date&_count={_COUNTS.get(key, _DEFAULT_COUNT)}"
        )
    drugs = _codes(RXNORM, [*vs.ld_rxnorm, *vs.drug_class_rxnorm["gcsf"]])
    out[ADMINISTRATIONS_KEY] = (
        f"MedicationAdministration?patient={{{{context.patientId}}}}&code={drugs}"
        f"&effective-time=ge{ld_from.isoformat()}&_sort=-effective-time&_count={_COUNTS[ADMINISTRATIONS_KEY]}"
    )
    authored_from = (course.day0 - timedelta(days=ORDER_AUTHORED_DAYS)).isoformat()
    out[ORDERS_KEY] = (
        f"MedicationRequest?patient={{{{context.patientId}}}}&code={drugs}"
        f"&authoredon=ge{authored_from}&_sort=-authoredon&_count={_DEFAULT_COUNT}"
    )
    return out


def follow_up_cards(
    course: Course,
    infusion_flags: tuple[str, ...],
    patient_id: str,
    data: Mapping[str, list[dict[str, Any]]],
    vs: ValueSets,
    rules: LabRules,
    follow_up: FollowUp,
    today: date,
) -> list[Card]:
    """At most one card: the course so far and the §9.6 items that apply today ([] when none does)."""
    meds = [*data.get(ADMINISTRATIONS_KEY, ()), *data.get(ORDERS_KEY, ())]
    ld = ld_start(course, meds, patient_id, vs, rules.tz)
    labs = [r for key in (*GRID_LAB_KEYS, *LD_LAB_KEYS) for r in data.get(key, ())]
    at_ld = assess_patient(ld_trigger(course, ld, vs), labs, patient_id, vs, rules)
    # The grid reads ANC, PLT and Hb only; CRP and ferritin are for the score at LD.
    result = course_result(
        [r for key in GRID_LAB_KEYS for r in data.get(key, ())], course, today, patient_id, vs, rules
    )
    gcsf = gcsf_in_course(meds, course, today, patient_id, vs, rules.tz)
    items = applicable_items(result, at_ld.confirmed.group, gcsf, follow_up.rules)
    if not items:
        return []
    view = FollowUpView(result, ld, at_ld, items, infusion_flags, ruleset_version(vs), follow_up.rules)
    return [follow_up_card(view, patient_id, follow_up.drugs)]
