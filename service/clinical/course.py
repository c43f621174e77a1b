"""After infusion: the hematotoxicity course of clinical-spec §9 (day 0 to day +100), as pure functions.

The same functions serve a live course (a ``patient-view`` hook at "today") and a completed one (the
cohort at ``--as-of``); input is plain FHIR JSON dicts, arithmetic is Decimal, and every per-observation
rule (status, units, plausibility, censoring, derived ANC) is the one of ``labs.py``.

API (the entry point; the grid lives in ``course_grid.py``, the phenotype automaton in ``phenotype.py``):

- ``infusions(resources, patient_id, vs, tz, procedure_codes=frozenset()) -> (list[Infusion], flags)``:
  §9.2 CAR-T infusions (MedicationAdministrations of a CAR-T product, or Procedures with a site code),
  sorted by day; an infusion without a date is left out and flagged ``infusion-without-date``.
- ``courses(infusions) -> list[Course]``: every course, first first (day 0 .. day +100, or the day
  before the next infusion day).
- ``course_for(infusions, today) -> Course | None``: the course that contains ``today`` (a hook's).
- ``ld_start(course, resources, patient_id, vs, tz) -> LdStart``: the §9.2 LD start (T0 of the score).
- ``ld_trigger(course, ld) -> Trigger``: the adapter that lets ``assessment.assess_patient`` score HT
  at that LD start (the HT rules are not repeated here).
- ``course_result(observations, course, today, patient_id, vs, rules) -> CourseResult``: the daily
  grid (§9.3), every measure of §9.4, the phenotype (§9.5), the current run of ANC < 0.5 (§9.6),
  today's course day, the latest ANC / PLT / Hb, flags.
- ``result_below(result, threshold) -> Tri``: whether one lab result is surely below a threshold
  (for card rules such as F1 on ``CourseResult.latest``).
- ``Measures.as_json()`` / ``Phenotype.as_json()`` / ``Interval.as_json()``: the §9.8 shapes.

"Today" is a facility-local calendar date everywhere: a hook passes ``now.astimezone(tz).date()``,
the cohort its ``--as-of`` date.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Any, Literal

from service.clinical.labs import LabResult, LabRules
from service.clinical.orders import Trigger
from service.clinical.valuesets import ValueSets

Resource = dict[str, Any]  # one FHIR resource as JSON, unchecked
Tri = Literal["yes", "no", "unknown"]
PhenotypeName = Literal["quick", "intermittent", "aplastic", "unclassified"]
LdSource = Literal["administration", "order", "assumed"]

COURSE_DAYS = 100  # day 0 .. day +100 (§9.2)


@dataclass(frozen=True)
class Interval:
    """An integer known to lie in [min, max] (a count of days whose unknown days may go either way)."""

    min: int
    max: int

    @property
    def exact(self) -> bool:
        return self.min == self.max

    def as_json(self) -> dict[str, int]:
        return {"min": self.min, "max": self.max}


@dataclass(frozen=True)
class Infusion:
    """One CAR-T infusion: day 0 of a course."""

    ref: str | None  # "MedicationAdministration/<id>" or "Procedure/<id>"
    product: str | None  # value-set product name; None for a Procedure (its code names no product)
    when: datetime  # timezone-aware; midnight local when only a date is known
    date_only: bool
    day: date  # facility-local calendar date of the infusion = day 0


@dataclass(frozen=True)
class Course:
    """Day 0 .. ``last`` (day +100, or the day before the next infusion), as local calendar dates."""

    infusion: Infusion
    index: int  # 0 = the patient's first course
    day0: date
    last: date  # the course's last calendar day

    @property
    def last_day(self) -> int:
        """The course day of ``last`` (100 unless a later infusion cut the course short)."""
        raise NotImplementedError

    def day_of(self, d: date) -> int:
        """Course day of a local calendar date (day N = date − day 0; negative before infusion)."""
        raise NotImplementedError

    def live(self, today: date) -> bool:
        """True while the course's last day is after ``today`` (its days after today are unknown)."""
        raise NotImplementedError


@dataclass(frozen=True)
class LdStart:
    """The LD start of a course (§9.2): T0 of the HT score."""

    t0: datetime  # for §1 scoring; the end of the local day when only a date is known
    value: str  # as known: "YYYY-MM-DD" or a FHIR dateTime (the extension's ``ldStart``)
    date_only: bool
    source: LdSource
    ref: str | None  # the MedicationAdministration / MedicationRequest it came from
    drugs: frozenset[str]  # LD drugs given or ordered on days −14..0 (for the regimen)
    flags: tuple[str, ...]  # "t0-assumed"


@dataclass(frozen=True)
class Phenotype:
    """§9.5: ``value`` when one phenotype is reachable (``final``), else the sorted candidates."""

    value: PhenotypeName | None
    candidates: tuple[PhenotypeName, ...]  # sorted; one element exactly when final
    final: bool

    def as_json(self) -> dict[str, object]:
        """{"value", "final": true} or {"candidates": [...], "final": false} (§9.8)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Measures:
    """Every measure of §9.4. Yes/no measures never say a favourable "no" an unknown day could overturn."""

    severe_neutropenia_days: Interval  # days 0–60 with ANC < 0.5
    severe_neutropenia_14: Tri
    severe_neutropenia_early: Tri  # some result ANC < 0.5, days 0–30
    severe_neutropenia_late: Tri  # days 31–100
    protracted_severe_neutropenia: Tri  # ≥ 7 consecutive days ANC < 0.5, days 0–100
    profound_neutropenia: Tri  # some result ANC < 0.1, days 0–100
    protracted_profound_neutropenia: Tri  # ≥ 7 consecutive days ANC < 0.1
    prolonged_neutropenia: Tri  # some result ANC < 1.0 on days 21–100
    severe_thrombocytopenia_early: Tri  # some result PLT < 50, days 0–30
    severe_thrombocytopenia_late: Tri
    severe_anemia_early: Tri  # some result Hb < 8.0 (labs only: transfusion not assessed)
    severe_anemia_late: Tri
    anc_recovery_day: int | None  # CIBMTR recovery (§9.4); None when none (yet)
    follow_up_days: int | None  # course day of the last usable result of ANC, PLT or Hb; None without any

    def as_json(self) -> dict[str, object]:
        """The §9.8 ``measures`` object (camelCase keys; the ``None`` ones omitted, never null)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Latest:
    """The latest usable result of one analyte (lowest of a tie), on course day ``day`` (≥ −14)."""

    result: LabResult
    day: int
    date: date


@dataclass(frozen=True)
class CourseResult:
    course: Course
    today: date
    day: int  # today's course day (may exceed 100 for a completed course)
    live: bool
    measures: Measures
    phenotype: Phenotype
    current_severe_run: Interval  # §9.6 current run of ANC < 0.5
    latest: Mapping[str, Latest]  # "anc", "platelets", "hemoglobin": those with a result
    flags: tuple[str, ...]  # e.g. "timing-imprecise", "untrusted:anc", "course-cut-short"


def infusions(
    resources: Iterable[Resource],
    patient_id: str,
    vs: ValueSets,
    tz: tzinfo,
    procedure_codes: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[list[Infusion], tuple[str, ...]]:
    """The patient's CAR-T infusions (§9.2), sorted by time, and flags (``infusion-without-date``).

    A MedicationAdministration counts when its medication is a CAR-T product (``vs.product_rxnorm`` /
    ``vs.product_names``, the shared drug matcher) and its status is not ``not-done`` /
    ``entered-in-error``; a Procedure counts when one of its ``code.coding`` is a (system, code) of
    ``procedure_codes`` (none shipped), with the same status rule. Its time is ``effectiveDateTime`` /
    ``effectivePeriod.start`` (``performedDateTime`` / ``performedPeriod.start`` for a Procedure).
    """
    raise NotImplementedError


def courses(infs: Iterable[Infusion]) -> list[Course]:
    """Every course of the patient, first first; infusions on the same local day make one course."""
    raise NotImplementedError


def course_for(infs: Iterable[Infusion], today: date) -> Course | None:
    """The course whose day 0 .. last day contains ``today``, or None (not in a course)."""
    raise NotImplementedError


def ld_start(course: Course, resources: Iterable[Resource], patient_id: str, vs: ValueSets, tz: tzinfo) -> LdStart:
    """§9.2: the earliest LD-drug MedicationAdministration on course days −14..0; else the earliest
    planned start of an LD MedicationRequest in that range; else day 0 − 5, flagged ``t0-assumed``."""
    raise NotImplementedError


def ld_trigger(course: Course, ld: LdStart) -> Trigger:
    """A Trigger for ``assessment.assess_patient`` with T0 = the LD start (the HT score at LD)."""
    raise NotImplementedError


def result_below(result: LabResult, threshold: Decimal) -> Tri:
    """ "yes" when a usable result is surely below ``threshold`` (canonical unit), "no" when surely not,
    "unknown" for a censored value on both sides (e.g. "<1.0" against 0.5) or an unusable result."""
    raise NotImplementedError


def course_result(
    observations: Iterable[Resource], course: Course, today: date, patient_id: str, vs: ValueSets, rules: LabRules
) -> CourseResult:
    """The course so far (live) or whole (completed): grid, measures, phenotype, current run, latest."""
    raise NotImplementedError
