"""One patient's first CAR-T course through the service's own rules → one `courses.csv` row (§10).

Nothing clinical is decided here: day 0, the LD start, the daily grid, every measure and the phenotype
come from `service.clinical.course`; the HT score from `assessment.assess_patient`; the NRM flags and
EASIX from `nrm.nrm_profile`. This module only feeds them one patient's resources, in an order that
does not depend on the export's, and writes their answers in the column contract of §10.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, tzinfo
from decimal import Decimal
from typing import Any

import orjson

from service.clinical import course as cc
from service.clinical.assessment import assess_patient
from service.clinical.labs import LabResult, local_day, parse_fhir_datetime, parse_labs
from service.clinical.medications import match_drug, medication_concepts
from service.clinical.nrm import nrm_profile
from service.cohort.config import CohortRules
from service.cohort.problems import Kind
from service.cohort.registry import RegistryEntry
from service.cohort.store import UNREAD, Row, unread_lines

TRI_MEASURES = (
    "severe_neutropenia_14",
    "severe_neutropenia_early",
    "severe_neutropenia_late",
    "protracted_severe_neutropenia",
    "profound_neutropenia",
    "protracted_profound_neutropenia",
    "prolonged_neutropenia",
    "severe_thrombocytopenia_early",
    "severe_thrombocytopenia_late",
    "severe_anemia_early",
    "severe_anemia_late",
)
# The column contract of the cohort issue, in this order; later columns may only be appended.
COLUMNS = (
    "patient",
    "day0",
    "ld_start",
    "ld_start_source",
    "ht_min",
    "ht_max",
    "ht_group",
    "ht_provisional_group",
    "diabetes",
    "elevated_ferritin",
    "easix",
    "severe_neutropenia_days_min",
    "severe_neutropenia_days_max",
    *TRI_MEASURES,
    "anc_recovery_day",
    "phenotype",
    "phenotype_candidates",
    "follow_up_days",
    "flags",
    # appended (§10 allows more): whether the course is still live at --as-of, how many courses, product
    "live",
    "courses",
    "product",
)
EXTRA_ANALYTES = ("ldh", "creatinine")  # EASIX inputs, as the order hooks score them

Place = tuple[int, int, int]  # file, chunk, line within the chunk
PatientProblem = tuple[int, int, int, Kind, str]


@dataclass
class PatientOutcome:
    row: dict[str, str] | None = None
    problems: list[PatientProblem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def _tri(flag: bool | None) -> str:
    return "unknown" if flag is None else "yes" if flag else "no"


def _easix(x: Decimal | None) -> str:
    return "" if x is None else f"{x:.3f}"


def _num(x: int | None) -> str:
    return "" if x is None else str(x)


def _sort_key(item: tuple[dict[str, Any], Row]) -> tuple[str, str, bytes]:
    res, row = item
    rid = res.get("id")
    return (row[1], rid if isinstance(rid, str) else "", row[5])


def _registry_infusions(entries: list[RegistryEntry], tz: tzinfo) -> list[cc.Infusion]:
    out = []
    for e in entries:
        day = local_day(e.infusion, e.infusion_date_only, tz)
        out.append(cc.Infusion(None, None, e.infusion, e.infusion_date_only, day))
    return sorted(out, key=lambda i: (i.when, i.day))


def observation_problem(obs: dict[str, Any], r: LabResult | None) -> Kind | None:
    """What the lab rules could not use in an Observation, for the problem list, from the rules' own
    reading of it (`labs.parse_observation`, shared with the score and the course: labs.ParsedLabs)."""
    if r is None:
        return None
    if r.problem == "no-time":
        period = obs.get("effectivePeriod")
        raw = obs.get("effectiveDateTime") or obs.get("effectiveInstant") or obs.get("issued")
        if raw is None and isinstance(period, dict):
            raw = period.get("start") or period.get("end")
        return "unparseable-date" if raw is not None else None
    return "unit-rejected" if r.problem == "unit" else None


def _undated_infusions(
    resources: list[tuple[dict[str, Any], Row]], pool: list[dict[str, Any]], rules: CohortRules
) -> list[Row]:
    """The CAR-T administrations behind an `infusion-without-date` flag, to report their lines."""
    out = []
    tz = rules.rules.tz
    for res, row in resources:
        if res.get("resourceType") != "MedicationAdministration":
            continue
        if match_drug(medication_concepts(res, pool), rules.vs.product_rxnorm, rules.vs.product_names) is None:
            continue
        period = res.get("effectivePeriod")
        raw = res.get("effectiveDateTime") or (period.get("start") if isinstance(period, dict) else None)
        if not isinstance(raw, str) or parse_fhir_datetime(raw, tz) is None:
            out.append(row)
    return out


def analyze_patient(
    pid: str,
    rows: list[Row],
    rules: CohortRules,
    today: date,
    registry: Mapping[str, list[RegistryEntry]],
    medications: Any,
    conditions_unreadable: bool,
    out_id: str,
) -> PatientOutcome:
    out = PatientOutcome()
    tz = rules.rules.tz
    # "!": a line that was not JSON, kept under the patient it names; UNREAD: the Observations of codes no
    # rule reads, kept as places only (both are reported when the patient is missing).
    broken = [r for r in rows if r[1].startswith("!")]
    parsed = [(orjson.loads(r[5]), r) for r in rows if r[1][0] not in "!~"]
    parsed.sort(key=_sort_key)
    patient = next((res for res, r in parsed if r[1] == "Patient"), None)
    if patient is None:
        places = [(r[2], r[3], r[4], r[1].lstrip("!") or "a line") for r in rows if r[1] != UNREAD]
        places += [(r[2], r[3], n, "Observation") for r in rows if r[1] == UNREAD for n in unread_lines(r)]
        out.counts["resources-of-missing-patients"] += len(places)
        out.problems += [(f, c, n, "missing-patient", f"{what} dropped") for f, c, n, what in places]
        return out
    out.counts["patients"] += 1
    resources = [res for res, r in parsed if r[1] != "Patient"]
    # Medications named by reference live in the export's shared Medication file(s).
    pool: list[dict[str, Any]] = []
    for res in resources:
        ref = res.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(target, str) and target.startswith("Medication/"):
            pool += [orjson.loads(b) for b in medications.get(target.removeprefix("Medication/"))]
    everything = resources + pool
    observations = [res for res in resources if res.get("resourceType") == "Observation"]
    # Each Observation read once, for the problem list, the score at LD and the course.
    labs = parse_labs(observations, pid, rules.vs, rules.rules)
    # ECOG is no lab code: it is among the Observations the lab rules did not read.
    not_labs = [o for o, x in zip(labs.observations, labs.results, strict=True) if x is None]
    conditions = [res for res in resources if res.get("resourceType") == "Condition"]

    observation_rows = [r for res, r in parsed if res.get("resourceType") == "Observation"]
    for place, res, lab in zip(observation_rows, labs.observations, labs.results, strict=True):
        if (kind := observation_problem(res, lab)) is not None:
            out.problems.append((place[2], place[3], place[4], kind, ""))

    flags: set[str] = set()
    if pid in registry:
        infs = _registry_infusions(registry[pid], tz)
        flags.add("registry")
    else:
        infs, inf_flags = cc.infusions(everything, pid, rules.vs, tz, rules.procedure_codes)
        flags |= set(inf_flags)
        if "infusion-without-date" in inf_flags:
            out.problems += [
                (r[2], r[3], r[4], "infusion-without-date", "") for r in _undated_infusions(parsed, pool, rules)
            ]
    all_courses = cc.courses(infs)
    if not all_courses:
        out.counts["patients-without-course"] += 1
        return out
    course = all_courses[0]
    if len(all_courses) > 1:
        flags.add("later-courses")

    ld = cc.ld_start(course, everything, pid, rules.vs, tz)
    trigger = cc.ld_trigger(course, ld, rules.vs)
    ld_value, ld_source, ld_flags = ld.value, str(ld.source), ld.flags
    entry = min(registry[pid], key=lambda e: e.infusion) if pid in registry else None
    if entry is not None and entry.ld_start is not None:
        # The registry's LD start replaces T0 only; the regimen stays the one of the export's LD drugs.
        t0, ld_value = cc.ld_anchor(entry.ld_start, entry.ld_start_date_only, tz)
        trigger = dataclasses.replace(trigger, t0=t0, t0_assumed=False, t0_date_only=entry.ld_start_date_only)
        ld_source, ld_flags = "registry", ()
    flags |= set(ld_flags)

    a = assess_patient(trigger, labs, pid, rules.vs, rules.rules, EXTRA_ANALYTES)
    flags |= set(a.flags)
    nrm = nrm_profile(
        a.components,
        conditions,
        patient,
        not_labs,
        pid,
        a.trigger.t0,
        tz,
        rules.ferritin_uln,
        rules.m_easix_crp_mg_per_l,
        rules.extra_diabetes_snomed,
    )
    diabetes = _tri(nrm.diabetes)
    condition_lost = conditions_unreadable or any(r[1] == "!Condition" for r in broken)
    if condition_lost and nrm.diabetes is not True:
        # A Condition line that could not be read may be this patient's diabetes (§10: unknown).
        diabetes = "unknown"
        flags.add("condition-unreadable")
    if broken:
        flags.add("unreadable-lines")

    result = cc.course_result(labs, course, today, pid, rules.vs, rules.rules)
    flags |= set(result.flags)
    m = result.measures
    ph = result.phenotype
    row = {
        "patient": out_id,
        "day0": course.day0.isoformat(),
        "ld_start": ld_value,
        "ld_start_source": ld_source,
        "ht_min": str(a.confirmed.min),
        "ht_max": str(a.confirmed.max),
        "ht_group": a.confirmed.group,
        "ht_provisional_group": a.provisional.group if a.provisional is not None else "",
        "diabetes": diabetes,
        "elevated_ferritin": _tri(nrm.ferritin.elevated),
        "easix": _easix(nrm.easix.easix),
        "severe_neutropenia_days_min": str(m.severe_neutropenia_days.min),
        "severe_neutropenia_days_max": str(m.severe_neutropenia_days.max),
        **{k: getattr(m, k) for k in TRI_MEASURES},
        "anc_recovery_day": _num(m.anc_recovery_day),
        "phenotype": ph.value if ph.final and ph.value is not None else "undetermined",
        "phenotype_candidates": "" if ph.final else "|".join(ph.candidates),
        "follow_up_days": _num(m.follow_up_days),
        # Flags name kinds, never resources: a token holding a reference is left out of a shared file.
        "flags": "|".join(sorted(f for f in flags if "/" not in f)),
        "live": "yes" if result.live else "no",
        "courses": str(len(all_courses)),
        "product": course.infusion.product or "",
    }
    out.row = row
    out.counts["courses"] += 1
    return out
