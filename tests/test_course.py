"""The post-infusion course (clinical-spec §9): worked cases C1–C8, day 0, LD start, and properties."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from service.clinical.assessment import assess_patient
from service.clinical.course import (
    CourseResult,
    course_for,
    course_result,
    courses,
    infusions,
    ld_anchor,
    ld_start,
    ld_trigger,
    result_below,
)
from service.clinical.labs import LabRules, parse_observation
from service.clinical.phenotype import candidates
from service.clinical.valuesets import value_sets
from tests.cases import obs
from tests.course_cases import (
    CASES,
    COMPLETED_TODAY,
    DAY0,
    PATIENT,
    TZ,
    CourseCase,
    administration,
    anc,
    at,
    daily,
    infusion,
    ld_given,
    plt,
    resources,
    today,
)
from tests.test_hostile_input import OBS_FIELDS, json_values

VS = value_sets()
RULES = LabRules(tz=TZ)


def run(labs: list[dict], today_day: int | None = None, extra: list[dict] | None = None) -> CourseResult:
    res = [infusion(), ld_given(), *labs, *(extra or [])]
    infs, _ = infusions(res, PATIENT, VS, TZ)
    (course,) = courses(infs)
    when = COMPLETED_TODAY if today_day is None else DAY0 + timedelta(days=today_day)
    return course_result(res, course, when, PATIENT, VS, RULES)


# ---------------------------------------------------------------- C1–C8 (§9.7)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_worked_course_case(case: CourseCase) -> None:
    res = resources(case)
    infs, flags = infusions(res, PATIENT, VS, TZ)
    assert flags == ()
    # A hook sees a live course (course_for); a completed one is the cohort's (courses).
    course = course_for(infs, today(case)) if case.today_day is not None else courses(infs)[0]
    assert course is not None and course.day0 == DAY0
    assert course_for(infs, today(case)) == (course if case.today_day is not None else None)
    r = course_result(res, course, today(case), PATIENT, VS, RULES)
    m = r.measures.as_json()
    for key, want in case.measures.items():
        assert m.get(key) == want, key
    if case.phenotype:
        assert r.phenotype.as_json() == case.phenotype
    if case.current_run is not None:
        assert r.current_severe_run.as_json() == {"min": case.current_run[0], "max": case.current_run[1]}
    assert r.live == (case.today_day is not None)


def test_c1_every_measure() -> None:
    r = run([anc(0, 3.0), *daily(1, 5, 0.3), *daily(6, 100, 2.0)])
    assert r.measures.as_json() == {
        "severeNeutropeniaDays": {"min": 5, "max": 5},
        "severeNeutropenia14": "no",
        "severeNeutropeniaEarly": "yes",
        "severeNeutropeniaLate": "no",
        "protractedSevereNeutropenia": "no",
        "profoundNeutropenia": "no",
        "protractedProfoundNeutropenia": "no",
        "prolongedNeutropenia": "no",
        # No PLT / Hb results: unknown, never "no".
        "severeThrombocytopeniaEarly": "unknown",
        "severeThrombocytopeniaLate": "unknown",
        "severeAnemiaEarly": "unknown",
        "severeAnemiaLate": "unknown",
        "ancRecoveryDay": 6,
        "followUpDays": 100,
    }
    assert r.day == 150 and not r.live
    assert r.current_severe_run.as_json() == {"min": 0, "max": 0}
    assert "severe-anemia-labs-only" in r.flags


def test_c5_grid_filling() -> None:
    r = run([anc(0, 0.3), anc(3, 0.3), anc(10, 0.3), *daily(14, 100, 2.0)])
    below = [s[1] for s in r.grids["anc"].states[:15]]  # ANC 0.5 states, 1 = below, 2 = unknown
    assert below == [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 0]
    assert r.measures.anc_recovery_day == 14


def test_c8_live_ht_high_and_gcsf_is_not_ours() -> None:
    case = CASES[-1]
    res = resources(case)
    infs, _ = infusions(res, PATIENT, VS, TZ)
    course = course_for(infs, today(case))
    assert course is not None
    ld = ld_start(course, res, PATIENT, VS, TZ)
    assert (ld.source, ld.value[:10], ld.flags) == ("administration", "2024-03-10", ())
    ht = assess_patient(ld_trigger(course, ld, VS), res, PATIENT, VS, RULES)
    assert ht.confirmed.min >= 2 and ht.confirmed.group == "high"
    r = course_result(res, course, today(case), PATIENT, VS, RULES)
    assert r.day == 9 and r.live
    assert r.latest["anc"].day == 9 and result_below(r.latest["anc"].result, Decimal("0.5")) == "yes"
    assert "aplastic" in r.phenotype.candidates


# ---------------------------------------------------------------- grid and measures


def test_censored_values_keep_their_interval() -> None:
    r = run([anc(0, 1.0, "<"), anc(1, 1.5, ">"), anc(2, 0.1, "<")], today_day=2)
    states = r.grids["anc"].states
    assert states[0] == (2, 2, 1, 1)  # "<1.0": unknown vs 0.1 and 0.5, below 1.0, not above 1.5
    assert states[1] == (0, 0, 0, 0)  # ">1.5": surely not below 1.0, above 1.5
    assert states[2][:2] == (1, 1)  # "<0.1": below 0.1 and 0.5


def test_exactly_1_5_is_not_a_recovery() -> None:
    r = run([*daily(0, 3, 0.3), *daily(4, 100, 1.5)])
    assert r.phenotype.value == "unclassified"  # dipped, never above 1.5
    r = run([*daily(0, 3, 0.3), *daily(4, 100, 1.51)])
    assert r.phenotype.value == "quick"


def test_lowest_value_of_a_day_whatever_its_code() -> None:
    derived = [
        obs("wbc", "6690-2", 1.0, "10*9/L", at(3)),
        obs("pct", "770-8", 30, "%", at(3)),  # 0.3 derived
    ]
    r = run([*daily(0, 100, 2.0), *derived])
    assert r.measures.severe_neutropenia_days.as_json() == {"min": 1, "max": 1}


def test_untrusted_value_makes_its_day_unknown_not_filled() -> None:
    bad = obs("anc-bad", "751-8", 1200, "10*3/uL", at(5))  # implausible: a /uL value mislabelled
    r = run([*daily(0, 4, 2.0), bad, *daily(6, 100, 2.0)])
    assert r.grids["anc"].states[5][1] == 2
    assert r.measures.severe_neutropenia_days.as_json() == {"min": 0, "max": 1}
    assert "untrusted:anc" in r.flags


def test_results_without_value_are_not_results() -> None:
    absent = obs("a", "751-8", 0.2, "10*9/L", at(5), status="entered-in-error")
    text = {**anc(6, 0.2), "valueQuantity": None, "valueString": "<0.5"}
    r = run([anc(4, 2.0), absent, text, anc(7, 2.0)])
    assert r.grids["anc"].states[5][1] == 0  # filled from days 4 and 7 (gap 3)
    assert r.grids["anc"].states[6][1] == 0


def test_issued_only_places_the_result_and_flags_it() -> None:
    o = anc(3, 0.3)
    del o["effectiveDateTime"]
    o["issued"] = at(3, 14)
    r = run([o], today_day=5)
    assert r.grids["anc"].states[3][1] == 1
    assert "timing-imprecise" in r.flags


def test_facility_local_calendar_day() -> None:
    # 23:30 UTC on day 2 is 00:30 on day 3 in Berlin (CET): the result is a day-3 result.
    when = datetime.combine(DAY0 + timedelta(days=2), time(23, 30)).isoformat() + "Z"
    r = run([obs("late", "751-8", 0.3, "10*9/L", when)], today_day=5)
    assert r.grids["anc"].measured[3] and not r.grids["anc"].measured[2]


def test_days_after_today_are_unknown_and_windows_stay_open() -> None:
    r = run(daily(0, 40, 2.0), today_day=40)
    m = r.measures
    assert m.severe_neutropenia_early == "no"  # days 0–30 are over and surely not below
    assert m.severe_neutropenia_late == "unknown"  # still open
    assert m.severe_neutropenia_days.as_json() == {"min": 0, "max": 20}
    assert m.protracted_severe_neutropenia == "unknown"
    assert r.phenotype.final is False


def test_aplastic_is_final_in_a_live_course_after_14_sure_days() -> None:
    r = run(daily(0, 13, 0.2), today_day=13)
    assert r.phenotype.as_json() == {"value": "aplastic", "final": True}
    assert r.measures.severe_neutropenia_14 == "yes"
    assert r.current_severe_run.as_json() == {"min": 14, "max": 14}


def test_current_run_widens_with_days_since_and_before() -> None:
    r = run([anc(0, 0.3), *daily(6, 9, 0.3)], today_day=12)
    # days 1–5 unknown (gap 6), latest result day 9, days 10–12 unknown.
    assert r.current_severe_run.as_json() == {"min": 4, "max": 13}
    r = run([*daily(0, 5, 0.3), anc(6, 0.6)], today_day=8)
    assert r.current_severe_run.as_json() == {"min": 0, "max": 2}  # not below on day 6; days 7–8 unknown
    r = run([*daily(0, 5, 0.3), anc(6, 0.6)], today_day=6)
    assert r.current_severe_run.as_json() == {"min": 0, "max": 0}


def test_recovery_needs_three_measured_days_not_broken_by_an_uncertain_one() -> None:
    labs = [*daily(0, 3, 0.3), anc(4, 0.8), anc(5, 0.8), anc(6, 1.0, "<"), *daily(7, 100, 0.8)]
    assert run(labs).measures.anc_recovery_day == 7
    assert run(daily(0, 100, 2.0)).measures.anc_recovery_day is None  # never below 0.5


def test_anemia_and_follow_up() -> None:
    hb = [obs(f"hb{d}", "718-7", v, "g/dL", at(d)) for d, v in ((2, 7.5), (40, 9.0))]
    r = run(hb)
    assert (r.measures.severe_anemia_early, r.measures.severe_anemia_late) == ("yes", "no")
    assert r.measures.follow_up_days == 40
    assert r.latest["hemoglobin"].result.value == Decimal("9.0")
    assert r.latest["hemoglobin"].date == DAY0 + timedelta(days=40)


def test_latest_tie_shows_the_lowest() -> None:
    r = run([plt(4, 80, "a"), plt(4, 40, "b")], today_day=5)
    assert r.latest["platelets"].result.value == Decimal(40)


# ---------------------------------------------------------------- day 0 and courses (§9.2)


def test_infusion_without_a_date_is_ignored_and_flagged() -> None:
    infs, flags = infusions([infusion(), administration("x", "Kymriah", None)], PATIENT, VS, TZ)
    assert [i.ref for i in infs] == ["MedicationAdministration/cart"] and flags == ("infusion-without-date",)
    infs, flags = infusions([administration("x", "Kymriah", "2024-13")], PATIENT, VS, TZ)
    assert infs == [] and flags == ("infusion-without-date",)


def test_infusion_status_not_done_and_entered_in_error() -> None:
    for status in ("not-done", "entered-in-error"):
        assert infusions([infusion(status=status)], PATIENT, VS, TZ)[0] == []
    assert len(infusions([infusion(status="in-progress")], PATIENT, VS, TZ)[0]) == 1


def test_infusion_effective_period_and_code_and_other_patient() -> None:
    period = administration("p", "unknown text", None, rxnorm="1987402", effectivePeriod={"start": at(0, 10)})
    (inf,), _ = infusions([period], PATIENT, VS, TZ)
    assert inf.day == DAY0 and inf.product == "axicabtagene ciloleucel" and not inf.date_only
    assert infusions([infusion(patient="other")], PATIENT, VS, TZ)[0] == []
    assert infusions([administration("f", "fludarabine", at(0))], PATIENT, VS, TZ)[0] == []


def test_infusion_by_medication_reference() -> None:
    med = {
        "resourceType": "Medication",
        "id": "m1",
        "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "2594780"}]},
    }
    ref = administration("r", "", at(0), medicationReference={"reference": "Medication/m1"})
    del ref["medicationCodeableConcept"]
    (inf,), _ = infusions([ref, med], PATIENT, VS, TZ)
    assert inf.product == "ciltacabtagene autoleucel"


def test_procedure_codes_are_a_parameter() -> None:
    proc = {
        "resourceType": "Procedure",
        "id": "pr",
        "status": "completed",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "code": {"coding": [{"system": "http://example.org/proc", "code": "CART-INF"}]},
        "performedPeriod": {"start": DAY0.isoformat()},
    }
    assert infusions([proc], PATIENT, VS, TZ)[0] == []  # none shipped
    (inf,), _ = infusions([proc], PATIENT, VS, TZ, frozenset({("http://example.org/proc", "CART-INF")}))
    assert (inf.ref, inf.product, inf.day, inf.date_only) == ("Procedure/pr", None, DAY0, True)
    prep = {**proc, "status": "preparation"}
    assert infusions([prep], PATIENT, VS, TZ, frozenset({("http://example.org/proc", "CART-INF")}))[0] == []


def test_two_infusions_split_courses() -> None:
    res = [infusion(0), infusion(40, oid="cart2"), *daily(0, 100, 2.0)]
    infs, _ = infusions(res, PATIENT, VS, TZ)
    first, second = courses(infs)
    assert (first.index, first.day0, first.last_day) == (0, DAY0, 39)
    assert (second.index, second.day0, second.last_day) == (1, DAY0 + timedelta(days=40), 100)
    assert course_for(infs, DAY0 + timedelta(days=39)) == first
    assert course_for(infs, DAY0 + timedelta(days=45)) == second
    assert course_for(infs, DAY0 + timedelta(days=141)) is None
    r = course_result(res, first, COMPLETED_TODAY, PATIENT, VS, RULES)
    assert r.measures.severe_neutropenia_late == "unknown"  # days 40–100 belong to the next course
    assert r.measures.severe_neutropenia_early == "no"
    assert r.measures.severe_neutropenia_days.as_json() == {"min": 0, "max": 21}
    assert "course-cut-short" in r.flags


def test_a_split_dose_of_the_same_product_within_14_days_is_one_course() -> None:
    # Obecabtagene autoleucel is given as a split dose (days 1 and 10): one treatment, one course, whose
    # neutropenia since the first dose keeps counting.
    res = [
        administration("d1", "obecabtagene autoleucel", at(0)),
        administration("d2", "obecabtagene autoleucel", at(9)),
        *daily(0, 12, 0.3),
    ]
    infs, _ = infusions(res, PATIENT, VS, TZ)
    (course,) = courses(infs)
    assert (course.day0, course.last_day) == (DAY0, 100)
    r = course_result(res, course, DAY0 + timedelta(days=12), PATIENT, VS, RULES)
    assert r.current_severe_run.as_json() == {"min": 13, "max": 13}
    # Another product, or the same one after 14 days, is a new course.
    for later in (administration("o", "Kymriah", at(9)), administration("d3", "obecabtagene autoleucel", at(15))):
        assert len(courses(infusions([res[0], later], PATIENT, VS, TZ)[0])) == 2


def test_same_day_infusions_are_one_course() -> None:
    infs, _ = infusions([infusion(0), infusion(0, oid="bag2")], PATIENT, VS, TZ)
    assert len(infs) == 2 and len(courses(infs)) == 1


# ---------------------------------------------------------------- LD start (§9.2)


def _course() -> Any:
    infs, _ = infusions([infusion()], PATIENT, VS, TZ)
    return courses(infs)[0]


def ld_order(oid: str, start: str, status: str = "completed") -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": oid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "medicationCodeableConcept": {"text": "cyclophosphamide"},
        "dosageInstruction": [{"timing": {"repeat": {"boundsPeriod": {"start": start}}}}],
    }


def test_ld_start_from_administration() -> None:
    res = [ld_given(-5, "flu5"), ld_given(-4, "flu4"), ld_given(-20, "old"), ld_order("o", at(-6))]
    ld = ld_start(_course(), res, PATIENT, VS, TZ)
    assert (ld.source, ld.ref, ld.value, ld.flags) == ("administration", "MedicationAdministration/flu5", at(-5, 9), ())
    assert ld.drugs == {"fludarabine", "cyclophosphamide"}
    trig = ld_trigger(_course(), ld, VS)
    assert (trig.regimen, trig.validated_context, trig.t0_assumed) == ("flu-cy", True, False)


def test_an_oral_ld_drug_never_dates_the_ld_start() -> None:
    """The order-time oral exclusion (orders.is_oral_form) also holds for a course's LD start (clinical-safety
    review): oral cyclophosphamide on day -12 is not lymphodepletion, fludarabine IV on day -5 is."""
    oral = ld_given(-12, "cy-oral", "cyclophosphamide")
    oral["dosage"] = {"route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}]}}
    tablets = ld_order("cy-tab", at(-13))
    tablets["medicationCodeableConcept"] = {"text": "cyclophosphamide 50 MG Oral Tablet"}
    ld = ld_start(_course(), [oral, tablets, ld_given(-5, "flu5")], PATIENT, VS, TZ)
    assert (ld.source, ld.ref, ld.value) == ("administration", "MedicationAdministration/flu5", at(-5, 9))
    assert ld.drugs == {"fludarabine"}


def test_a_dstu2_administration_in_capsules_is_oral() -> None:
    """DSTU2 MedicationAdministration.dosage.quantity carries the unit: "capsules" is oral, not LD."""
    oral = ld_given(-12, "cy-caps", "cyclophosphamide")
    oral["dosage"] = {"quantity": {"value": 2, "unit": "capsules"}}
    ld = ld_start(_course(), [oral, ld_given(-5, "flu5")], PATIENT, VS, TZ)
    assert (ld.ref, ld.drugs) == ("MedicationAdministration/flu5", {"fludarabine"})


def test_a_timed_ld_administration_wins_over_a_date_only_one_of_its_day() -> None:
    date_only = ld_given(-5, "flu-day")
    date_only["effectiveDateTime"] = (DAY0 - timedelta(days=5)).isoformat()
    for res in ([date_only, ld_given(-5, "flu-timed")], [ld_given(-5, "flu-timed"), date_only]):
        ld = ld_start(_course(), res, PATIENT, VS, TZ)
        assert (ld.ref, ld.date_only, ld.value) == ("MedicationAdministration/flu-timed", False, at(-5, 9))


def test_ld_start_from_order() -> None:
    day = (DAY0 - timedelta(days=6)).isoformat()
    res = [ld_order("o", day), ld_order("x", at(-8), status="entered-in-error"), ld_given(-30)]
    ld = ld_start(_course(), res, PATIENT, VS, TZ)
    assert (ld.source, ld.ref, ld.value, ld.date_only) == ("order", "MedicationRequest/o", day, True)
    assert ld.t0.astimezone(TZ).date() == DAY0 - timedelta(days=6)
    assert ld_trigger(_course(), ld, VS).regimen == "cyclophosphamide"


def test_ld_start_assumed() -> None:
    ld = ld_start(_course(), [administration("n", "fludarabine", at(-5), status="not-done")], PATIENT, VS, TZ)
    assert (ld.source, ld.value, ld.flags) == ("assumed", (DAY0 - timedelta(days=5)).isoformat(), ("t0-assumed",))
    trig = ld_trigger(_course(), ld, VS)
    assert (trig.regimen, trig.validated_context, trig.t0_assumed) == ("unknown", False, True)
    a = assess_patient(trig, [], PATIENT, VS, RULES)
    assert "t0-assumed" in a.flags and a.confirmed.group == "indeterminate"


def test_ld_anchor_date_only_is_the_end_of_the_local_day() -> None:
    t0, text = ld_anchor(datetime.combine(DAY0, time(0), TZ), True, TZ)
    assert (t0, text) == (datetime.combine(DAY0, time.max, TZ), DAY0.isoformat())
    when = datetime.combine(DAY0, time(9, 30), TZ)
    assert ld_anchor(when, False, TZ) == (when, when.isoformat())


# ---------------------------------------------------------------- phenotype automaton


def _brute(day_bands: list[frozenset[int]]) -> set[str]:
    """Every assignment of bands, classified by the §9.5 definitions read directly (small cases only)."""
    import itertools

    out: set[str] = set()
    for seq in itertools.product(*[sorted(b) for b in day_bands]):
        run = best = 0
        for b in seq:
            run = run + 1 if b == 0 else 0
            best = max(best, run)
        if best >= 14:
            out.add("aplastic")
            continue
        d1 = next((d for d, b in enumerate(seq) if b <= 1), None)
        if d1 is None:
            out.add("quick")
            continue
        r = next((d for d in range(d1 + 1, len(seq)) if seq[d] == 3), None)
        if r is None:
            out.add("unclassified")
            continue
        dips = [d for d in range(r + 1, len(seq)) if seq[d] <= 1]
        if any(d >= 22 for d in dips):
            out.add("intermittent")
        elif dips:
            out.add("unclassified")
        else:
            out.add("quick")
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from([0, 1, 2, 3]), min_size=61, max_size=61),
    st.sets(st.integers(0, 60), max_size=4),
    st.lists(st.frozensets(st.sampled_from([0, 1, 2, 3]), min_size=2), min_size=4, max_size=4),
)
def test_phenotype_automaton_is_exact(base: list[int], open_days: set[int], options: list[frozenset[int]]) -> None:
    day_bands = [frozenset({b}) for b in base]
    for d, opts in zip(sorted(open_days), options, strict=False):
        day_bands[d] = opts
    assert set(candidates(day_bands)) == _brute(day_bands)


# ---------------------------------------------------------------- properties


VALUES = st.sampled_from(["0.05", "0.2", "0.45", "0.5", "0.7", "1.0", "1.2", "1.5", "1.6", "3.0"])
COMPARATORS = st.sampled_from([None, None, None, "<", ">"])
# (day, value, comparator), at most one ANC result a day
SERIES = st.lists(st.tuples(st.integers(0, 100), VALUES, COMPARATORS), max_size=45, unique_by=lambda x: x[0])
# Sparse enough that a removed result is often not inside a gap the spec fills.
SPARSE = st.lists(
    st.tuples(st.integers(0, 100), VALUES, COMPARATORS), min_size=1, max_size=15, unique_by=lambda x: x[0]
)
TODAY = st.one_of(st.none(), st.integers(0, 100))

# Measures over the daily grid, and the "some result below X" measures with their X (§9.3, §9.4).
GRID_MEASURES = (
    "severeNeutropenia14",
    "protractedSevereNeutropenia",
    "protractedProfoundNeutropenia",
)
RESULT_MEASURES = {
    "severeNeutropeniaEarly": Decimal("0.5"),
    "severeNeutropeniaLate": Decimal("0.5"),
    "profoundNeutropenia": Decimal("0.1"),
    "prolongedNeutropenia": Decimal("1.0"),
}


def _labs(series: list[tuple[int, str, str | None]]) -> list[dict]:
    return [anc(d, float(v), c) for d, v, c in series]


def _run_series(series: list[tuple[int, str, str | None]], today_day: int | None) -> CourseResult:
    return run(_labs(series), today_day)


def _not_favourable(before: str, after: str) -> None:
    # An unfavourable or undecided answer never becomes favourable; a decided one may only open up.
    assert not (before != "no" and after == "no")
    assert after in (before, "unknown")


def _wider(before: CourseResult, after: CourseResult, result_measures: tuple[str, ...]) -> None:
    b, a = before.measures.as_json(), after.measures.as_json()
    for k in (*GRID_MEASURES, *result_measures):
        _not_favourable(b[k], a[k])
    x, y = before.measures.severe_neutropenia_days, after.measures.severe_neutropenia_days
    assert y.min <= x.min and y.max >= x.max
    # The current run is the run at the latest ANC result: losing that result moves it to an earlier
    # run, whose sure length may be longer (unfavourable, so safe); the most it may be never shrinks.
    assert after.current_severe_run.max >= before.current_severe_run.max
    assert set(before.phenotype.candidates) <= set(after.phenotype.candidates)


def _isolated(series: list[tuple[int, str, str | None]], i: int) -> bool:
    """After removing result ``i`` its day is not between two results ≤ 3 days apart (so the spec's gap
    filling does not impute that day from its neighbours: §9.3 fills, and filling is not widening)."""
    day = series[i][0]
    days = sorted(d for j, (d, _, _) in enumerate(series) if j != i)
    before = [d for d in days if d < day]
    after = [d for d in days if d > day]
    return not (before and after and after[0] - before[-1] <= 3)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPARSE, TODAY, st.data())
def test_removing_a_result_never_turns_an_answer_favourable(series: Any, today_day: Any, data: Any) -> None:
    """Removing a result whose day the spec does not then fill from its neighbours only widens the grid
    measures; a "some result below X" measure (§9.3 last bullet: it counts results, as the source does)
    never turns favourable when the removed result was surely not below X. (Removing *the* result below X
    removes the event itself; filling a day from neighbours that share a state is the spec's imputation.)"""
    i = data.draw(st.integers(0, len(series) - 1))
    assume(_isolated(series, i))
    removed = parse_observation(_labs(series)[i], PATIENT, VS, RULES)
    assert removed is not None
    kept = tuple(k for k, x in RESULT_MEASURES.items() if result_below(removed, x) == "no")
    _wider(_run_series(series, today_day), _run_series(series[:i] + series[i + 1 :], today_day), kept)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SERIES, TODAY, st.data())
def test_an_untrusted_value_never_turns_an_answer_favourable(series: Any, today_day: Any, data: Any) -> None:
    """A result whose value is lost (here: a rejected unit) only widens everything, wherever it is."""
    if not series:
        return
    i = data.draw(st.integers(0, len(series) - 1))
    labs = _labs(series)
    labs[i]["valueQuantity"]["unit"] = labs[i]["valueQuantity"]["code"] = "10*12/L"
    before, after = _run_series(series, today_day), run(labs, today_day)
    _wider(before, after, tuple(RESULT_MEASURES))
    # The current run's sure length is what F2/F3 read (review finding 5, §9.6): an untrusted latest result
    # weighs like no result, leaving the run of the results before it; the max never shrinks (_wider).
    if series[i][0] == max(d for d, _, _ in series):
        assert after.current_severe_run == run(labs[:i] + labs[i + 1 :], today_day).current_severe_run


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SERIES, TODAY, st.data())
def test_lowering_an_anc_never_lowers_a_bound(series: Any, today_day: Any, data: Any) -> None:
    if not series:
        return
    i = data.draw(st.integers(0, len(series) - 1))
    factor = data.draw(st.sampled_from(["0", "0.1", "0.5", "0.9", "1"]))
    d, v, c = series[i]
    lowered = [*series[:i], (d, str(Decimal(v) * Decimal(factor)), c), *series[i + 1 :]]
    before, after = _run_series(series, today_day), _run_series(lowered, today_day)
    for x, y in (
        (before.measures.severe_neutropenia_days, after.measures.severe_neutropenia_days),
        (before.current_severe_run, after.current_severe_run),
    ):
        assert y.min >= x.min and y.max >= x.max


def _mixed(day: int, k: int, value: str) -> list[dict]:
    """One draw of day ``day``: a direct ANC, or WBC × neutrophil % (two WBC results of the specimen)."""
    when = at(day, 6 + k)
    v = float(value)
    if k % 2 == 0:
        return [obs(f"a{day}-{k}", "751-8", v, "10*9/L", when)]
    return [
        obs(f"w{day}-{k}", "6690-2", 2 * v, "10*9/L", when),
        obs(f"x{day}-{k}", "6690-2", 4 * v, "10*9/L", when),
        obs(f"p{day}-{k}", "770-8", 50, "%", when),
    ]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 3), VALUES), max_size=30),
    st.one_of(st.none(), st.integers(0, 60)),
    st.randoms(use_true_random=False),
)
def test_answers_do_not_depend_on_input_order(draws: Any, today_day: Any, rnd: Any) -> None:
    labs = [o for d, k, v in draws for o in _mixed(d, k, v)] + [plt(3, 45), plt(40, 60, "q")]
    shuffled = list(labs)
    rnd.shuffle(shuffled)
    a, b = run(labs, today_day), run(shuffled, today_day)
    assert (a.measures, a.phenotype, a.current_severe_run, a.grids, a.flags) == (
        b.measures,
        b.phenotype,
        b.current_severe_run,
        b.grids,
        b.flags,
    )
    assert {k: (x.result.value, x.day) for k, x in a.latest.items()} == {
        k: (x.result.value, x.day) for k, x in b.latest.items()
    }


def test_derived_anc_uses_the_wbc_giving_the_lowest_anc() -> None:
    r = run([*_mixed(5, 1, "0.45")], today_day=5)  # WBC 0.9 and 1.8 with 50 %: ANC 0.45 (not 0.9)
    assert r.grids["anc"].states[5][1] == 1
    assert r.latest["anc"].result.value == Decimal("0.45")


# ---------------------------------------------------------------- bad shapes never raise


ADMIN_FIELDS = [
    "status",
    "subject",
    "medicationCodeableConcept",
    "medicationReference",
    "contained",
    "effectiveDateTime",
    "effectivePeriod",
    "resourceType",
    "id",
]
PROCEDURE = {
    "resourceType": "Procedure",
    "id": "pr",
    "status": "completed",
    "subject": {"reference": f"Patient/{PATIENT}"},
    "code": {"coding": [{"system": "s", "code": "c"}]},
    "performedDateTime": at(0, 10),
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(OBS_FIELDS),
    json_values,
    st.integers(0, 20),
    st.sampled_from(["infusion", "ld", "procedure"]),
    st.sampled_from(ADMIN_FIELDS),
    json_values,
)
def test_hostile_json_never_raises_nor_hides_aplasia(
    obs_field: str, obs_value: Any, day: int, which: str, admin_field: str, admin_value: Any
) -> None:
    """Any JSON in one field of one result and of one infusion / LD / Procedure resource: no exception,
    and C2 (aplastic, 16 days below 0.5) never loses its unfavourable answers."""
    labs = [*daily(0, 15, 0.2), *daily(16, 100, 1.8)]
    labs[day][obs_field] = obs_value
    res = {"infusion": infusion(), "ld": ld_given(), "procedure": dict(PROCEDURE)}
    res[which][admin_field if which != "procedure" else admin_field.replace("effective", "performed")] = admin_value
    everything = [*res.values(), *labs, obs_value, admin_value]
    infs, _ = infusions(everything, PATIENT, VS, TZ, frozenset({("s", "c")}))
    for course in courses(infs):
        ld = ld_start(course, everything, PATIENT, VS, TZ)
        assess_patient(ld_trigger(course, ld, VS), everything, PATIENT, VS, RULES)
        r = course_result(everything, course, COMPLETED_TODAY, PATIENT, VS, RULES)
        if course.day0 == DAY0 and course.last_day == 100:
            m = r.measures
            assert m.severe_neutropenia_14 != "no" and m.protracted_severe_neutropenia != "no"
            assert "aplastic" in r.phenotype.candidates


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["mmol/L", "G/L", "", "10*6/uL", "%", "xyz", "/nl", "K/uL"]), st.booleans())
def test_odd_units_censored_strings_and_no_effective_never_raise(unit: str, drop_time: bool) -> None:
    o = anc(3, 0.3)
    o["valueQuantity"]["unit"] = o["valueQuantity"]["code"] = unit
    censored_string = {**anc(4, 0.3), "valueQuantity": {"value": "<0.5", "comparator": "<<"}}
    value_string = {**anc(5, 0.3), "valueString": "<0.5"}
    del value_string["valueQuantity"]
    no_effective = anc(6, 0.3)
    del no_effective["effectiveDateTime"]
    if drop_time:
        del o["effectiveDateTime"]
    res = [infusion(), administration("j", "Kymriah", None), o, censored_string, value_string, no_effective]
    g = run(res, today_day=8).grids["anc"]
    valid = unit in ("G/L", "/nl", "K/uL") and not drop_time
    assert g.states[3][1] == (1 if valid else 2)  # a rejected unit: unknown, never dropped and filled
    assert g.states[4][1] == 2  # an unreadable comparator: the value is unknown
    assert not g.measured[5] and not g.measured[6]  # a valueString, no time at all: not results


def test_result_below_on_one_result() -> None:
    r = parse_observation(anc(0, 1.0, "<"), PATIENT, VS, RULES)
    assert r is not None
    assert result_below(r, Decimal("0.5")) == "unknown"
    assert result_below(r, Decimal("1.0")) == "yes"
    assert result_below(r, Decimal("0.1")) == "unknown"


def test_a_censored_derived_anc_day_keeps_its_interval_and_a_mixed_one_is_unknown() -> None:
    """Review finding 1: WBC 2.0 x "<5 %" is ANC "<0.1" on day 1, never skipped and filled from its
    neighbours; WBC ">2.0" x "<5 %" says nothing, so day 5 is unknown (not filled "not below")."""
    censored = [obs("w1", "6690-2", 2.0, "10*9/L", at(1)), obs("p1", "770-8", 5, "%", at(1), comparator="<")]
    mixed = [
        obs("w5", "6690-2", 2.0, "10*9/L", at(5), comparator=">"),
        obs("p5", "770-8", 5, "%", at(5), comparator="<"),
    ]
    r = run([anc(0, 2.0), *censored, *daily(2, 4, 2.0), *mixed, *daily(6, 100, 2.0)])
    assert r.grids["anc"].states[1][:2] == (1, 1)  # below 0.1 and below 0.5
    assert r.grids["anc"].states[5] == (2, 2, 2, 2)
    assert r.measures.profound_neutropenia == "yes"
    assert r.measures.severe_neutropenia_early == "yes"
    assert r.measures.severe_neutropenia_days.as_json() == {"min": 1, "max": 2}


@pytest.mark.parametrize("when", ["20240309080000", "2024-03-09T08:00:00 CET", "09/03/2024"])
def test_an_unreadable_collection_time_falls_back_to_issued(when: str) -> None:
    """Review finding 4: the result is placed by `issued` (flagged), not dropped and gap-filled."""
    o = anc(3, 0.3)
    o["effectiveDateTime"] = when
    o["issued"] = at(3, 14)
    r = run([anc(2, 2.0), o, anc(4, 2.0)], today_day=5)
    assert r.grids["anc"].states[3][1] == 1
    assert "timing-imprecise" in r.flags


def test_a_value_without_any_readable_time_is_flagged() -> None:
    o = anc(3, 0.3)
    o["effectiveDateTime"] = "09/03/2024"
    r = run([anc(2, 2.0), o, anc(4, 2.0)], today_day=5)
    assert "untimed:anc" in r.flags


def test_untrusted_or_censored_latest_anc_keeps_the_sure_run():
    """Review finding 5: an implausible (untrusted) or censored-unknown ANC on the latest day must not
    reset the current run's sure length to 0; the unknown day only widens max."""
    from service.clinical.course import course_result, courses, infusions
    from service.clinical.labs import LabRules
    from service.clinical.valuesets import value_sets
    from tests.cases import obs
    from tests.course_cases import DAY0, PATIENT, TZ, at, daily, infusion, ld_given

    vs = value_sets()
    c = courses(infusions([infusion(), ld_given()], PATIENT, vs, TZ)[0])[0]
    today = DAY0 + timedelta(days=10)
    for latest in (
        obs("bad", "751-8", 200, "10*9/L", at(10)),
        obs("cens", "751-8", 1.0, "10*9/L", at(10), comparator="<"),
    ):
        r = course_result([*daily(0, 9, 0.2), latest], c, today, PATIENT, vs, LabRules(tz=TZ))
        assert (r.current_severe_run.min, r.current_severe_run.max) == (10, 11), r.current_severe_run


def test_an_untimed_result_with_an_unreadable_subject_is_still_flagged() -> None:
    """Review of 2cf864d, F6: no time and no readable patient: flagged untimed, never lost in silence."""
    o = anc(3, 0.3)
    o["effectiveDateTime"] = "09/03/2024"
    o["subject"] = {"display": "Jane Doe"}
    assert "untimed:anc" in run([anc(2, 2.0), o, anc(4, 2.0)], today_day=5).flags


def test_a_timed_result_with_an_unreadable_subject_leaves_its_day_unknown() -> None:
    o = anc(3, 0.3)
    o["subject"] = {"display": "Jane Doe"}
    r = run([anc(2, 2.0), o, anc(4, 2.0)], today_day=5)
    assert "untrusted:anc" in r.flags
