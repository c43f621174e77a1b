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
- ``ld_anchor(when, date_only, tz) -> (t0, text)``: T0 and its text for an LD start known at ``when``
  (the end of the local day when only a date is known), for any other source of LD start (a registry).
- ``ld_trigger(course, ld, vs) -> Trigger``: the adapter that lets ``assessment.assess_patient`` score HT
  at that LD start (the HT rules are not repeated here).
- ``course_result(observations, course, today, patient_id, vs, rules) -> CourseResult``: the daily
  grid (§9.3), every measure of §9.4, the phenotype (§9.5), the current run of ANC < 0.5 (§9.6),
  today's course day, the latest ANC / PLT / Hb, flags.
- ``result_below(result, threshold) -> Tri``: whether one lab result is surely below a threshold
  (for card rules such as F1 on ``CourseResult.latest``).
- ``Measures.as_json()`` / ``Phenotype.as_json()`` / ``Interval.as_json()``: the §9.8 shapes.

"Today" is a facility-local calendar date everywhere: a hook passes ``now.astimezone(tz).date()``,
the cohort its ``--as-of`` date. A hook::

    infs, flags = infusions(resources, pid, vs, tz)
    course = course_for(infs, today)                      # None: not in a course, no card
    ld = ld_start(course, resources, pid, vs, tz)
    ht = assess_patient(ld_trigger(course, ld, vs), observations, pid, vs, rules)
    result = course_result(observations, course, today, pid, vs, rules)

(the cohort: ``courses(infs)`` instead of ``course_for``). C1–C8 of §9.7 as FHIR data: ``tests/course_cases.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, Literal

from service.clinical.course_grid import (
    ANC_01,
    ANC_05,
    ANC_10,
    BELOW,
    NOT,
    THRESHOLDS,
    UNKNOWN,
    AnalyteGrid,
    States,
    Threshold,
    Tri,
    at_least,
    bands,
    build_grid,
)
from service.clinical.fhirjson import as_dict, dicts
from service.clinical.labs import (
    UNTRUSTED,
    LabResult,
    LabRules,
    ParsedLabs,
    by_issued,
    derive_anc,
    local_day,
    parse_fhir_datetime,
    parse_labs,
)
from service.clinical.medications import belongs_to, match_drug, match_drugs, medication_concepts, resource_ref
from service.clinical.orders import (
    ORDER_TYPES,
    Regimen,
    Trigger,
    is_oral_form,
    planned_start,
    regimen_of,
    start_rank,
)
from service.clinical.phenotype import PhenotypeName, candidates
from service.clinical.valuesets import ValueSets

Resource = dict[str, Any]  # one FHIR resource as JSON, unchecked
LdSource = Literal["administration", "order", "assumed"]

COURSE_DAYS: Final = 100  # day 0 .. day +100 (§9.2)
# Further doses of one product within this many days of day 0 belong to its course (split dosing) [DESIGN].
SPLIT_DOSE_DAYS: Final = 14
LD_FIRST_DAY: Final = -14  # LD drugs count on course days −14..0 (§9.2)
ASSUMED_LD_DAY: Final = -5  # the nominal "day −5" [SRC european-mcl]
# The latest ANC / PLT / Hb shown on a card come from the LD range on: an older value belongs to
# another episode of care [DESIGN, our reading].
LATEST_FROM_DAY: Final = LD_FIRST_DAY

NOT_GIVEN: Final = frozenset({"not-done", "entered-in-error"})
# A Procedure "in preparation" has not happened yet [our reading: the spec names only not-done /
# entered-in-error, for MedicationAdministration, whose status set has no "preparation"].
PROCEDURE_NOT_DONE: Final = NOT_GIVEN | {"preparation"}
# An LD order that was carried out is "completed" (or "stopped" after the first dose) by the time a
# course is looked at, so unlike the order-time trigger (orders.DEAD_STATUS) those still date LD
# [our reading]; only orders that never stood are left out.
ORDER_NEVER_STOOD: Final = frozenset({"entered-in-error", "cancelled", "revoked"})

COURSE_ANALYTES: Final = ("anc", "platelets", "hemoglobin")
_ANC_PARTS: Final = frozenset({"seg_abs", "band_abs", "wbc", "neut_pct", "seg_pct", "band_pct"})


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
        return (self.last - self.day0).days

    def day_of(self, d: date) -> int:
        """Course day of a local calendar date (day N = date − day 0; negative before infusion)."""
        return (d - self.day0).days

    def live(self, today: date) -> bool:
        """True while the course's last day is after ``today`` (its days after today are unknown)."""
        return self.last > today


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
    """§9.5: ``value`` when one phenotype is reachable (``final``), else the candidates, in the order
    quick, intermittent, aplastic, unclassified."""

    value: PhenotypeName | None
    candidates: tuple[PhenotypeName, ...]  # one element exactly when final
    final: bool

    def as_json(self) -> dict[str, object]:
        """{"value", "final": true} or {"candidates": [...], "final": false} (§9.8)."""
        if self.final:
            return {"value": self.value, "final": True}
        return {"candidates": list(self.candidates), "final": False}


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
        out: dict[str, object] = {
            "severeNeutropeniaDays": self.severe_neutropenia_days.as_json(),
            "severeNeutropenia14": self.severe_neutropenia_14,
            "severeNeutropeniaEarly": self.severe_neutropenia_early,
            "severeNeutropeniaLate": self.severe_neutropenia_late,
            "protractedSevereNeutropenia": self.protracted_severe_neutropenia,
            "profoundNeutropenia": self.profound_neutropenia,
            "protractedProfoundNeutropenia": self.protracted_profound_neutropenia,
            "prolongedNeutropenia": self.prolonged_neutropenia,
            "severeThrombocytopeniaEarly": self.severe_thrombocytopenia_early,
            "severeThrombocytopeniaLate": self.severe_thrombocytopenia_late,
            "severeAnemiaEarly": self.severe_anemia_early,
            "severeAnemiaLate": self.severe_anemia_late,
        }
        if self.anc_recovery_day is not None:
            out["ancRecoveryDay"] = self.anc_recovery_day
        if self.follow_up_days is not None:
            out["followUpDays"] = self.follow_up_days
        return out


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
    # "timing-imprecise", "untrusted:<analyte>", "course-cut-short", "severe-anemia-labs-only"
    flags: tuple[str, ...]
    grids: Mapping[str, AnalyteGrid]  # the §9.3 daily grid per analyte, days 0..100


# ---------------------------------------------------------------- day 0


def _time_of(resource: Resource, at: str, period: str, tz: tzinfo) -> tuple[datetime, bool] | None:
    raw = resource.get(at)
    if raw is None:
        raw = as_dict(resource.get(period)).get("start")
    return parse_fhir_datetime(raw, tz) if isinstance(raw, str) else None


def _done(resource: Resource, not_done: frozenset[str]) -> bool:
    # Membership only for strings: a client may send any JSON there, and a dict is not hashable.
    status = resource.get("status")
    return not (isinstance(status, str) and status in not_done)


def _medications(pool: list[Resource]) -> list[Resource]:
    # A medicationReference is looked up among these only: scanning every resource for each
    # administration would make a long record quadratic.
    return [r for r in pool if r.get("resourceType") == "Medication"]


def _has_code(resource: Resource, codes: frozenset[tuple[str, str]]) -> bool:
    return any(
        (c.get("system"), c.get("code")) in codes
        for c in dicts(as_dict(resource.get("code")).get("coding"))
        if isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
    )


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
    ``procedure_codes`` (none shipped), with the same status rule (and not ``preparation``). Its time is
    ``effectiveDateTime`` / ``effectivePeriod.start`` (``performedDateTime`` / ``performedPeriod.start``
    for a Procedure).
    """
    pool = [r for r in resources if isinstance(r, dict)]
    meds = _medications(pool)
    found: list[Infusion] = []
    flags: set[str] = set()
    for r in pool:
        rtype = r.get("resourceType")
        product: str | None
        if rtype == "MedicationAdministration":
            if not _done(r, NOT_GIVEN) or not belongs_to(r, patient_id):
                continue
            product = match_drug(medication_concepts(r, meds), vs.product_rxnorm, vs.product_names)
            if product is None:
                continue
            t = _time_of(r, "effectiveDateTime", "effectivePeriod", tz)
        elif rtype == "Procedure" and procedure_codes:
            if not _done(r, PROCEDURE_NOT_DONE) or not belongs_to(r, patient_id) or not _has_code(r, procedure_codes):
                continue
            product = None
            t = _time_of(r, "performedDateTime", "performedPeriod", tz)
        else:
            continue
        if t is None:
            flags.add("infusion-without-date")
            continue
        when, date_only = t
        found.append(Infusion(resource_ref(r), product, when, date_only, local_day(when, date_only, tz)))
    found.sort(key=lambda i: (i.when, i.ref or ""))
    return found, tuple(sorted(flags))


def courses(infs: Iterable[Infusion]) -> list[Course]:
    """Every course of the patient, first first; infusions on the same local day make one course.

    A further infusion day ends the course the day before, even within 100 days (spec §9.2), except a
    further dose of the same product within SPLIT_DOSE_DAYS of day 0 [DESIGN, safety]: split-dose
    products (e.g. obecabtagene autoleucel, days 1 and 10) are one treatment, and starting a new course
    at the second dose would drop the days of neutropenia before it (a shorter current run, no F2/F3).
    An infusion recorded without a product (a Procedure) counts as the same product.
    """
    first_of_day: dict[date, Infusion] = {}
    for i in sorted(infs, key=lambda i: (i.when, i.ref or "")):
        first_of_day.setdefault(i.day, i)
    days: list[date] = []
    for d in sorted(first_of_day):
        if days and _further_dose(first_of_day[days[-1]], first_of_day[d]):
            continue
        days.append(d)
    out: list[Course] = []
    for k, d in enumerate(days):
        last = d + timedelta(days=COURSE_DAYS)
        if k + 1 < len(days):
            last = min(last, days[k + 1] - timedelta(days=1))
        out.append(Course(first_of_day[d], k, d, last))
    return out


def _further_dose(first: Infusion, later: Infusion) -> bool:
    same_product = first.product is None or later.product is None or first.product == later.product
    return same_product and (later.day - first.day).days <= SPLIT_DOSE_DAYS


def course_for(infs: Iterable[Infusion], today: date) -> Course | None:
    """The course whose day 0 .. last day contains ``today``, or None (not in a course)."""
    return next((c for c in courses(infs) if c.day0 <= today <= c.last), None)


# ---------------------------------------------------------------- LD start


def ld_anchor(when: datetime, date_only: bool, tz: tzinfo) -> tuple[datetime, str]:
    """T0 for §1 scoring and the LD start's text ("YYYY-MM-DD" or the dateTime) from when it is known."""
    if date_only:
        # As for the order-time trigger: labs drawn on a date-only LD day are pre-LD in practice.
        return datetime.combine(when.date(), time.max, tz), when.date().isoformat()
    return when, when.isoformat()


def ld_start(course: Course, resources: Iterable[Resource], patient_id: str, vs: ValueSets, tz: tzinfo) -> LdStart:
    """§9.2: the earliest LD-drug MedicationAdministration on course days −14..0; else the earliest
    planned start of an LD MedicationRequest in that range; else day 0 − 5, flagged ``t0-assumed``."""
    pool = [r for r in resources if isinstance(r, dict)]
    meds = _medications(pool)
    given: list[tuple[datetime, bool, str, tuple[str, ...]]] = []  # (when, date_only, ref, drugs)
    ordered: list[tuple[datetime, bool, str, tuple[str, ...]]] = []
    for r in pool:
        rtype = r.get("resourceType")
        if rtype == "MedicationAdministration":
            if not _done(r, NOT_GIVEN):
                continue
            into, t = given, _time_of(r, "effectiveDateTime", "effectivePeriod", tz)
        elif isinstance(rtype, str) and rtype in ORDER_TYPES:
            if not _done(r, ORDER_NEVER_STOOD):
                continue
            into, t = ordered, planned_start(r, tz)
        else:
            continue
        if t is None or not belongs_to(r, patient_id):
            continue
        if not LD_FIRST_DAY <= course.day_of(local_day(t[0], t[1], tz)) <= 0:
            continue
        named = match_drugs(medication_concepts(r, meds), vs.ld_rxnorm, vs.ld_names)
        if named and not is_oral_form(r, meds, vs):
            into.append((t[0], t[1], resource_ref(r) or "", named))
    drugs = frozenset(d for x in given + ordered for d in x[3])
    for source, found in (("administration", given), ("order", ordered)):
        if found:
            when, date_only, ref, _ = min(found, key=lambda x: (start_rank((x[0], x[1]), tz), x[2]))
            t0, value = ld_anchor(when, date_only, tz)
            src: LdSource = "administration" if source == "administration" else "order"
            return LdStart(t0, value, date_only, src, ref or None, drugs, ())
    assumed = course.day0 + timedelta(days=ASSUMED_LD_DAY)
    return LdStart(
        datetime.combine(assumed, time.max, tz), assumed.isoformat(), True, "assumed", None, drugs, ("t0-assumed",)
    )


def ld_trigger(course: Course, ld: LdStart, vs: ValueSets) -> Trigger:
    """A Trigger for ``assessment.assess_patient`` with T0 = the LD start (the HT score at LD).

    The regimen is read from the LD drugs of days −14..0 as at order time; none recorded → "unknown".
    The context counts as validated only for Flu/Cy and a known validated product: a Procedure-recorded
    infusion names no product, so its card keeps the caveat [our reading: unknown is not validated].
    """
    regimen: Regimen = regimen_of(ld.drugs) or "unknown"
    product = course.infusion.product
    validated = regimen == "flu-cy" and product is not None and product in vs.validated_products
    return Trigger(
        (), regimen, product, validated, ld.t0, ld.source == "assumed", ld.date_only and ld.source != "assumed"
    )


# ---------------------------------------------------------------- the course


def _states_of(thresholds: tuple[Threshold, ...], result: LabResult) -> States:
    if result.problem is not None or result.value is None:
        return (UNKNOWN,) * len(thresholds)
    span = result.span()
    return tuple([t.state(span) for t in thresholds])  # a list is built faster than a generator is run


def result_below(result: LabResult, threshold: Decimal) -> Tri:
    """ "yes" when a usable result is surely below ``threshold`` (canonical unit), "no" when surely not,
    "unknown" for a censored value on both sides (e.g. "<1.0" against 0.5) or an unusable result."""
    (st,) = _states_of((Threshold(threshold),), result)
    return "yes" if st == BELOW else "no" if st == NOT else "unknown"


def _lowest_first(r: LabResult) -> tuple[bool, Decimal, str]:
    # derive_anc pairs a percentage with the first WBC (and segs with the first bands) of the specimen:
    # sorted lowest first, that is the pair giving the lowest ANC (§1.5 rule 3 step 4), in any input order.
    return (r.value is None, r.value if r.value is not None else Decimal(0), r.observation or "")


def course_result(
    observations: Iterable[Resource] | ParsedLabs,
    course: Course,
    today: date,
    patient_id: str,
    vs: ValueSets,
    rules: LabRules,
) -> CourseResult:
    """The course so far (live) or whole (completed): grid, measures, phenotype, current run, latest.

    Days after ``today`` and after the course's last day are unknown; results there are not read.
    """
    tz = rules.tz
    today_day = course.day_of(today)
    horizon = min(today_day, course.last_day)
    placed: dict[str, list[tuple[int, States]]] = {a: [] for a in COURSE_ANALYTES}
    usable: dict[str, list[tuple[int, LabResult]]] = {a: [] for a in COURSE_ANALYTES}
    parts_by_day: dict[int, list[LabResult]] = {}
    flags: set[str] = set()

    def place(analyte: str, r: LabResult, day: int) -> None:
        if r.problem is None:
            usable[analyte].append((day, r))
        if day < 0:
            return
        if r.problem is not None:
            flags.add(f"untrusted:{analyte}")
        placed[analyte].append((day, _states_of(THRESHOLDS[analyte], r)))

    if not isinstance(observations, ParsedLabs):
        observations = parse_labs(observations, patient_id, vs, rules)
    for obs, r in observations.read(patient_id):
        # §1.5 rule 3 step 1: a result without a value (status, dataAbsentReason, valueString, no time)
        # is not a result; an untrusted one is (its value is unknown).
        if r.problem == "no-time":
            # Neither effective[x] nor issued readable: no day to put it on, but never lost in silence.
            flags.add(f"untimed:{'anc' if r.analyte in _ANC_PARTS else r.analyte}")
        # A value that is there but cannot be trusted (labs.UNTRUSTED: implausible, a rejected unit, an
        # unreadable comparator or subject) leaves its day unknown, never dropped, so that gap filling cannot
        # give it a favourable state from its neighbours [our reading of §9.3 + §1.5 step 2].
        if r.effective is None or (r.problem is not None and r.problem not in UNTRUSTED):
            continue
        if r.analyte not in _ANC_PARTS and r.analyte not in placed:
            continue
        day = course.day_of(local_day(r.effective, r.date_only, tz))
        if not LATEST_FROM_DAY <= day <= horizon:
            continue
        if day >= 0 and r.timing_imprecise and by_issued(obs, tz):  # placed by issued implies imprecise
            flags.add("timing-imprecise")
        if r.analyte in _ANC_PARTS:
            parts_by_day.setdefault(day, []).append(r)
            if r.problem is not None and day >= 0:
                # A WBC or differential that cannot be trusted leaves that day's ANC unknown.
                flags.add("untrusted:anc")
                placed["anc"].append((day, (UNKNOWN,) * len(THRESHOLDS["anc"])))
        else:
            place(r.analyte, r, day)
    # One specimen's parts are collected together, so deriving per day finds every pair derive_anc
    # would find over all parts, in time linear in the results.
    for parts in parts_by_day.values():
        for r in derive_anc(sorted(parts, key=_lowest_first)):
            if r.effective is not None:
                place("anc", r, course.day_of(local_day(r.effective, r.date_only, tz)))

    length = COURSE_DAYS + 1
    grids = {a: build_grid(placed[a], len(THRESHOLDS[a]), horizon, length) for a in COURSE_ANALYTES}
    anc = grids["anc"]

    def over(last: int) -> bool:
        # A window is over when today is past its last day and the course reaches that day: days after
        # a cut-short course's end are not this course's.
        return today_day > last and course.last_day >= last

    def some(analyte: str, t: int, first: int, last: int) -> Tri:
        return grids[analyte].some_result_below(t, first, last, over(last))

    severe_days = anc.count(ANC_05, 0, 60)
    measures = Measures(
        severe_neutropenia_days=Interval(*severe_days),
        severe_neutropenia_14=at_least(severe_days, 14),
        severe_neutropenia_early=some("anc", ANC_05, 0, 30),
        severe_neutropenia_late=some("anc", ANC_05, 31, 100),
        protracted_severe_neutropenia=at_least(anc.longest_run(ANC_05, 0, 100), 7),
        profound_neutropenia=some("anc", ANC_01, 0, 100),
        protracted_profound_neutropenia=at_least(anc.longest_run(ANC_01, 0, 100), 7),
        prolonged_neutropenia=some("anc", ANC_10, 21, 100),
        severe_thrombocytopenia_early=some("platelets", 0, 0, 30),
        severe_thrombocytopenia_late=some("platelets", 0, 31, 100),
        severe_anemia_early=some("hemoglobin", 0, 0, 30),
        severe_anemia_late=some("hemoglobin", 0, 31, 100),
        anc_recovery_day=_recovery_day(anc, horizon),
        follow_up_days=max((d for a in COURSE_ANALYTES for d, _ in usable[a] if d >= 0), default=None),
    )
    names = candidates(bands(anc.states[:61]))
    phenotype = Phenotype(names[0] if len(names) == 1 else None, names, len(names) == 1)
    flags.add("severe-anemia-labs-only")
    if course.last_day < COURSE_DAYS:
        flags.add("course-cut-short")
    return CourseResult(
        course=course,
        today=today,
        day=today_day,
        live=course.live(today),
        measures=measures,
        phenotype=phenotype,
        current_severe_run=_current_run(anc, horizon),
        latest=MappingProxyType(_latest(usable, course)),
        flags=tuple(sorted(flags)),
        grids=MappingProxyType(grids),
    )


def _recovery_day(anc: AnalyteGrid, horizon: int) -> int | None:
    """CIBMTR initial recovery (§9.4): after the first day surely below 0.5, the first of three
    consecutive measured days each surely not below 0.5. A measured day that is not surely so (e.g.
    "<1.0") breaks the three."""
    days = range(0, min(horizon, COURSE_DAYS) + 1)
    first = next((d for d in days if anc.states[d][ANC_05] == BELOW), None)
    if first is None:
        return None
    streak: list[int] = []
    for d in days[first + 1 :]:
        if not anc.measured[d]:
            continue
        if anc.states[d][ANC_05] == NOT:
            streak.append(d)
            if len(streak) == 3:
                return streak[0]
        else:
            streak = []
    return None


def _current_run(anc: AnalyteGrid, horizon: int) -> Interval:
    """§9.6: the run surely below 0.5 that ends on the latest ANC result's day, {min: its sure length,
    max: min + the unknown days since}. Our readings: "0 when the latest result is not below 0.5" is the
    sure length, so the days since still count in max (a run may have begun after that result); and max
    also counts the unknown days just before the sure run (they may have been below too)."""
    if horizon < 0:
        return Interval(0, 0)
    end = min(horizon, COURSE_DAYS)
    last = anc.last_measured(end)
    if last is None:
        return Interval(0, end + 1)  # no ANC in the course yet: every day so far unknown
    since = end - last
    if anc.states[last][ANC_05] == NOT:
        return Interval(0, since)
    if anc.states[last][ANC_05] == UNKNOWN and (sure_day := _last_sure_below(anc, last)) is not None:
        # An untrusted or censored-unknown latest result says nothing against the run: it does not end
        # it, so the sure length stays that of the last sure-below day, and the unknown days widen max.
        sure, possible = anc.run_ending(ANC_05, sure_day)
        return Interval(sure, possible + end - sure_day)
    sure, possible = anc.run_ending(ANC_05, last)
    return Interval(sure, possible + since)


def _last_sure_below(anc: AnalyteGrid, last: int) -> int | None:
    """The last day up to ``last`` surely below 0.5, when only unknown days follow it (else None)."""
    for d in range(last, -1, -1):
        state = anc.states[d][ANC_05]
        if state == BELOW:
            return d
        if state == NOT:
            return None
    return None


def _latest(usable: Mapping[str, list[tuple[int, LabResult]]], course: Course) -> dict[str, Latest]:
    out: dict[str, Latest] = {}
    for a, found in usable.items():
        if not found:
            continue
        newest = max(r.effective for _, r in found if r.effective is not None)
        day, r = min(
            ((d, r) for d, r in found if r.effective == newest),
            key=lambda x: (x[1].value if x[1].value is not None else Decimal(0), x[1].observation or ""),
        )
        out[a] = Latest(r, day, course.day0 + timedelta(days=day))
    return out
