"""Synthetic Bulk Data exports whose answers are known by construction (the cohort demo and tests).

`python -m service.cohort.synthetic OUT_DIR --patients 40 --seed 14` writes an export (NDJSON, lines
shuffled, Observations split over several files) and, beside it, the planted truth: `truth.csv` (the
`courses.csv` every patient must get, in the column contract), `registry.csv` (the registry for the
patients whose day 0 only the registry knows) and `truth.json` (the problems planted in the input).

Every course follows one of the worked patterns of clinical-spec §9.7 (C1–C8), with its parameter drawn
from the seed; the truth of each pattern is derived by hand in `_ANC` below, from the spec's
definitions, not by running the rules. The HT score at LD is planted analyte by analyte with values
well inside the §1.3 bands; an indeterminate score leaves analytes out. `--observations N` pads each
patient with vital signs up to about N Observations (the scale benchmark), which the rules ignore.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from service.cohort.analyze import COLUMNS

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
AS_OF = date(2026, 1, 1)  # the demo's and tests' --as-of
FIRST_DAY0 = date(2023, 1, 9)
DAY0_SPAN = 980  # days: FIRST_DAY0 + 980 + 100 is still before AS_OF

# HT points → a value well inside its band (spec §1.3), canonical units.
HT_VALUES: dict[str, dict[int, float]] = {
    "anc": {1: 1.0, 0: 2.5},
    "hemoglobin": {1: 8.5, 0: 11.0},
    "platelets": {2: 60, 1: 120, 0: 200},
    "crp": {1: 4.0, 0: 0.5},
    "ferritin": {2: 2500, 1: 1000, 0: 300},
}
HT_CODES = {
    "anc": ("751-8", "10*9/L"),
    "hemoglobin": ("718-7", "g/dL"),
    "platelets": ("777-3", "10*9/L"),
    "crp": ("1988-5", "mg/dL"),
    "ferritin": ("2276-4", "ng/mL"),
}
MAX_POINTS = {"anc": 1, "hemoglobin": 1, "platelets": 2, "crp": 1, "ferritin": 2}
FERRITIN_ULN = 400  # the planted lab's reference range: "elevated" above it
LDH, CREATININE = 250, "1.0"

# Planted HT configurations: points per analyte, None = not measured at LD.
HT_PLANS: dict[str, dict[str, int | None]] = {
    "low0": {"anc": 0, "hemoglobin": 0, "platelets": 0, "crp": 0, "ferritin": 0},
    "low1": {"anc": 0, "hemoglobin": 0, "platelets": 1, "crp": 0, "ferritin": 0},
    "low-missing-crp": {"anc": 0, "hemoglobin": 0, "platelets": 0, "crp": None, "ferritin": 0},  # [0, 1] low
    "high2": {"anc": 0, "hemoglobin": 0, "platelets": 0, "crp": 0, "ferritin": 2},
    "high3": {"anc": 1, "hemoglobin": 1, "platelets": 1, "crp": 0, "ferritin": 0},
    "high5": {"anc": 1, "hemoglobin": 1, "platelets": 2, "crp": 1, "ferritin": 0},
    "high7": {"anc": 1, "hemoglobin": 1, "platelets": 2, "crp": 1, "ferritin": 2},
    "indeterminate": {"anc": 0, "hemoglobin": 0, "platelets": None, "crp": 0, "ferritin": 1},  # [1, 3]
}


@dataclass
class Planted:
    pid: str
    day0: date
    anc: str  # pattern name
    param: int
    ht: str
    plt: str
    hb: str
    ld: str  # administration | order | assumed | registry
    diabetes: bool
    later_course: bool
    live: bool = False
    product: str = "idecabtagene vicleucel"
    by_reference: bool = False  # the CAR-T drug named through a Medication resource
    # An ANC with no readable time at all is planted for this patient: the ANC at LD is then missing
    # (it may be the newest result; clinical-spec §1.5 rule 3 step 2, the service's safe reading).
    anc_untimed: bool = False
    expected: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- the ANC patterns and their truth

Series = dict[int, tuple[float, str | None]]  # course day → (value, comparator)


def _series(spans: list[tuple[int, int, float]], comparator: str | None = None) -> Series:
    out: Series = {}
    for first, last, v in spans:
        for d in range(first, last + 1):
            out[d] = (v, comparator if v < 0.2 else None)
    return out


def _anc(pattern: str, k: int) -> tuple[Series, dict[str, Any]]:
    """The ANC values of a pattern and the measures the spec gives them (derived by hand, §9.3–§9.5)."""
    no = "no"
    if pattern == "quick":  # C1: d0 3.0; d1..dk 0.3 (k ≤ 6); 2.0 to d100
        s = _series([(0, 0, 3.0), (1, k, 0.3), (k + 1, 100, 2.0)])
        t = {
            "days": (k, k),
            "sn14": no,
            "early": "yes",
            "late": no,
            "prot": no,
            "prof": no,
            "protprof": no,
            "prol": no,
            "rec": k + 1,
        }
        return s, t | {"phenotype": "quick"}
    if pattern == "aplastic":  # C2: d0..d(k-1) 0.2 (14 ≤ k ≤ 20); 1.8 to d100
        s = _series([(0, k - 1, 0.2), (k, 100, 1.8)])
        t = {
            "days": (k, k),
            "sn14": "yes",
            "early": "yes",
            "late": no,
            "prot": "yes",
            "prof": no,
            "protprof": no,
            "prol": no,
            "rec": k,
        }
        return s, t | {"phenotype": "aplastic"}
    if pattern in ("intermittent", "unclassified"):  # C3 / C4: second dip 0.8 on day k
        s = _series([(0, 4, 0.3), (5, k - 1, 1.8), (k, k, 0.8), (k + 1, 100, 1.6)])
        prolonged = "yes" if k >= 21 else no
        t = {
            "days": (5, 5),
            "sn14": no,
            "early": "yes",
            "late": no,
            "prot": no,
            "prof": no,
            "protprof": no,
            "prol": prolonged,
            "rec": 5,
        }
        return s, t | {"phenotype": "intermittent" if k >= 22 else "unclassified"}
    if pattern == "gaps":  # C5: d0, d3, d10 0.3; d14..d100 2.0
        s = _series([(0, 0, 0.3), (3, 3, 0.3), (10, 10, 0.3), (14, 100, 2.0)])
        t = {
            "days": (5, 14),
            "sn14": "unknown",
            "early": "yes",
            "late": no,
            "prot": "unknown",
            "prof": no,
            "protprof": no,
            "prol": no,
        }
        return s, t | {"rec": 14, "phenotype": "undetermined", "candidates": "quick|aplastic|unclassified"}
    if pattern == "censored":  # C6: d0..d(k-1) "<0.1" (7 ≤ k ≤ 12); 1.6 to d100
        s = _series([(0, k - 1, 0.1), (k, 100, 1.6)], comparator="<")
        t = {
            "days": (k, k),
            "sn14": no,
            "early": "yes",
            "late": no,
            "prot": "yes",
            "prof": "yes",
            "protprof": "yes",
            "prol": no,
            "rec": k,
        }
        return s, t | {"phenotype": "quick"}
    if pattern == "live":  # C8: today = day 9, ANC 0.3 daily so far
        s = _series([(0, 9, 0.3)])
        u = "unknown"
        t = {
            "days": (10, 61),
            "sn14": u,
            "early": "yes",
            "late": u,
            "prot": "yes",
            "prof": u,
            "protprof": u,
            "prol": u,
            "rec": None,
        }
        return s, t | {"phenotype": "undetermined", "candidates": "quick|intermittent|aplastic|unclassified"}
    raise ValueError(pattern)


def _other(kind: str, analyte: str, live: bool) -> tuple[Series, tuple[str, str]]:
    """PLT or Hb over the course: (values by day, (early, late) truth)."""
    low, normal = (40.0, 150.0) if analyte == "platelets" else (7.5, 11.0)
    if live:  # results through day 9, all normal: both windows still open
        return _series([(0, 9, normal)]), ("unknown", "unknown")
    if kind == "normal":
        return _series([(0, 100, normal)]), ("no", "no")
    if kind == "early":
        return _series([(0, 10, low), (11, 100, normal)]), ("yes", "no")
    if kind == "both":
        return _series([(0, 40, low), (41, 100, normal)]), ("yes", "yes")
    raise ValueError(kind)


# ---------------------------------------------------------------- resources


def _ts(d: date, hour: int = 8, minute: int = 0) -> str:
    return f"{d.isoformat()}T{hour:02d}:{minute:02d}:00+00:00"


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"


def _obs(ids: _Ids, pid: str, code: str, value: float | str, unit: str, when: str, **extra: Any) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if extra.get("comparator"):
        q["comparator"] = extra.pop("comparator")
    extra.pop("comparator", None)
    return {
        "resourceType": "Observation",
        "id": ids("o"),
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
        ],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": q,
        **extra,
    }


def _med_admin(ids: _Ids, pid: str, when: str, drug: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": ids("ma"),
        "status": status,
        **drug,
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
    }


def _drug(text: str, rxnorm: str | None = None) -> dict[str, Any]:
    cc: dict[str, Any] = {"text": text}
    if rxnorm:
        cc["coding"] = [{"system": RXNORM, "code": rxnorm}]
    return {"medicationCodeableConcept": cc}


def _condition(ids: _Ids, pid: str, code: str, display: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": ids("c"),
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
    }


CILTA_MEDICATION = {
    "resourceType": "Medication",
    "id": "cilta-cel",
    "code": {"coding": [{"system": RXNORM, "code": "2594780", "display": "ciltacabtagene autoleucel"}]},
}


def _resources(p: Planted, ids: _Ids, pad_to: int, rng: random.Random) -> list[dict[str, Any]]:
    pid, d0 = p.pid, p.day0
    out: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": pid, "gender": rng.choice(["female", "male"]), "birthDate": "1958-05-17"}
    ]

    def day(n: int) -> date:
        return d0 + timedelta(days=n)

    # LD labs, day −6 (inside the 3-day window before an LD start on day −5)
    plan = HT_PLANS[p.ht]
    for analyte, pts in plan.items():
        if pts is None:
            continue
        code, unit = HT_CODES[analyte]
        extra: dict[str, Any] = {}
        if analyte == "ferritin":
            extra["referenceRange"] = [{"high": {"value": FERRITIN_ULN, "unit": unit, "system": UCUM, "code": unit}}]
        out.append(_obs(ids, pid, code, HT_VALUES[analyte][pts], unit, _ts(day(-6)), **extra))
    out.append(_obs(ids, pid, "2532-0", LDH, "U/L", _ts(day(-6))))
    out.append(_obs(ids, pid, "2160-0", float(CREATININE), "mg/dL", _ts(day(-6))))
    if p.ht == "indeterminate":
        # A stale platelet count (day −20, inside the 30-day lookback): the provisional group is high.
        out.append(_obs(ids, pid, "777-3", 60, "10*9/L", _ts(day(-20))))
    # LD
    flu, cy = _drug("fludarabine phosphate", "24698"), _drug("cyclophosphamide", "3002")
    if p.ld == "administration":
        out.append(_med_admin(ids, pid, _ts(day(-5), 9), flu))
        out.append(_med_admin(ids, pid, _ts(day(-5), 10), cy))
    elif p.ld in ("order", "registry"):
        for drug in (flu, cy):
            out.append(
                {
                    "resourceType": "MedicationRequest",
                    "id": ids("mr"),
                    "status": "completed",
                    "intent": "order",
                    **drug,
                    "subject": {"reference": f"Patient/{pid}"},
                    "dosageInstruction": [{"timing": {"repeat": {"boundsPeriod": {"start": day(-5).isoformat()}}}}],
                }
            )
    # CAR-T infusion (registry patients: only the registry knows day 0)
    if p.ld != "registry":
        drug = (
            {"medicationReference": {"reference": "Medication/cilta-cel"}}
            if p.by_reference
            else _drug("Abecma (idecabtagene vicleucel) suspension for IV infusion")
        )
        out.append(_med_admin(ids, pid, _ts(d0, 11), drug))
        if p.later_course:
            out.append(_med_admin(ids, pid, _ts(day(200), 11), drug))
    # the course
    anc, _ = _anc(p.anc, p.param)
    plt, _ = _other(p.plt, "platelets", p.live)
    hb, _ = _other(p.hb, "hemoglobin", p.live)
    for series, (code, unit) in ((anc, ("751-8", "10*9/L")), (plt, ("777-3", "10*9/L")), (hb, ("718-7", "g/dL"))):
        for n, (v, comparator) in sorted(series.items()):
            out.append(_obs(ids, pid, code, v, unit, _ts(day(n), 7), comparator=comparator))
    if p.diabetes:
        out.append(_condition(ids, pid, "44054006", "Type 2 diabetes mellitus"))
    out.append(_condition(ids, pid, "109989006", "Multiple myeloma"))
    # vital signs: ignored by every rule, present in any real export
    n_obs = sum(1 for r in out if r["resourceType"] == "Observation")
    for _ in range(max(0, pad_to - n_obs)):
        n = rng.randint(-14, 100)
        out.append(_obs(ids, pid, "8867-4", rng.randint(55, 110), "/min", _ts(day(n), rng.randint(0, 23))))
    return out


def _expected(p: Planted) -> dict[str, str]:
    plan = HT_PLANS[p.ht]
    if p.anc_untimed:
        plan = {**plan, "anc": None}
    lo = sum(v for v in plan.values() if v is not None)
    hi = lo + sum(MAX_POINTS[a] for a, v in plan.items() if v is None)
    group = "high" if lo >= 2 else "low" if hi <= 1 else "indeterminate"
    _, t = _anc(p.anc, p.param)
    _, (plt_e, plt_l) = _other(p.plt, "platelets", p.live)
    _, (hb_e, hb_l) = _other(p.hb, "hemoglobin", p.live)
    ld_value = {
        "administration": _ts(p.day0 - timedelta(days=5), 9),
        "order": (p.day0 - timedelta(days=5)).isoformat(),
        "assumed": (p.day0 - timedelta(days=5)).isoformat(),
        "registry": (p.day0 - timedelta(days=5)).isoformat(),
    }[p.ld]
    fer = plan["ferritin"]
    plt_pts = plan["platelets"]
    easix = "" if plt_pts is None else f"{LDH * float(CREATININE) / HT_VALUES['platelets'][plt_pts]:.3f}"
    flags = {"severe-anemia-labs-only"}
    if p.ld == "assumed":
        flags |= {"t0-assumed", "not-validated-for-regimen"}
    if p.ld in ("order", "registry"):
        flags.add("t0-date-only")
    if p.ld == "registry":
        flags |= {"registry", "not-validated-for-regimen"}  # a registry day 0 names no product
    if p.later_course:
        flags.add("later-courses")
    if p.anc_untimed:
        flags |= {"untimed:anc", "untrusted:anc"}
    days_lo, days_hi = t["days"]
    return {
        "patient": p.pid,
        "day0": p.day0.isoformat(),
        "ld_start": ld_value,
        "ld_start_source": p.ld,
        "ht_min": str(lo),
        "ht_max": str(hi),
        "ht_group": group,
        "ht_provisional_group": "high" if p.ht == "indeterminate" else "",
        "diabetes": "yes" if p.diabetes else "no",
        "elevated_ferritin": "unknown" if fer is None else "yes" if HT_VALUES["ferritin"][fer] > FERRITIN_ULN else "no",
        "easix": easix,
        "severe_neutropenia_days_min": str(days_lo),
        "severe_neutropenia_days_max": str(days_hi),
        "severe_neutropenia_14": t["sn14"],
        "severe_neutropenia_early": t["early"],
        "severe_neutropenia_late": t["late"],
        "protracted_severe_neutropenia": t["prot"],
        "profound_neutropenia": t["prof"],
        "protracted_profound_neutropenia": t["protprof"],
        "prolonged_neutropenia": t["prol"],
        "severe_thrombocytopenia_early": plt_e,
        "severe_thrombocytopenia_late": plt_l,
        "severe_anemia_early": hb_e,
        "severe_anemia_late": hb_l,
        "anc_recovery_day": "" if t["rec"] is None else str(t["rec"]),
        "phenotype": t["phenotype"],
        "phenotype_candidates": t.get("candidates", ""),
        "follow_up_days": "9" if p.live else "100",
        "flags": "|".join(sorted(flags)),
        "live": "yes" if p.live else "no",
        "courses": "2" if p.later_course else "1",
        "product": "" if p.ld == "registry" else "ciltacabtagene autoleucel" if p.by_reference else p.product,
    }


# ---------------------------------------------------------------- the cohort

# Which ANC pattern goes with which HT plan: HT-high courses lean to aplastic / intermittent, as in the
# seed, so that the demo's analyses have something to find; every pattern meets both groups.
_LOW_PLANS = ("low0", "low1", "low-missing-crp")
_HIGH_PLANS = ("high2", "high3", "high5", "high7")
_PATTERNS_LOW = ("quick", "quick", "quick", "intermittent", "unclassified", "gaps", "censored", "aplastic")
_PATTERNS_HIGH = ("aplastic", "aplastic", "intermittent", "intermittent", "quick", "censored", "gaps", "unclassified")


def plan_cohort(n: int, seed: int) -> list[Planted]:
    rng = random.Random(seed)
    out: list[Planted] = []
    for i in range(n):
        pid = f"pt-{seed}-{i:05d}"
        # a week apart, wrapping within DAY0_SPAN: every course is over (day +100) before AS_OF
        day0 = FIRST_DAY0 + timedelta(days=(7 * i) % DAY0_SPAN)
        kind = i % 10
        if kind == 9:
            ht = "indeterminate"
        elif kind % 2 == 0:
            ht = _LOW_PLANS[rng.randrange(len(_LOW_PLANS))]
        else:
            ht = _HIGH_PLANS[rng.randrange(len(_HIGH_PLANS))]
        pats = _PATTERNS_LOW if ht in _LOW_PLANS else _PATTERNS_HIGH
        anc = pats[rng.randrange(len(pats))]
        live = i % 20 == 13
        if live:
            anc, day0 = "live", AS_OF - timedelta(days=9)
        param = {
            "quick": rng.randint(1, 6),
            "aplastic": rng.randint(14, 20),
            "intermittent": rng.randint(22, 40),
            "unclassified": rng.randint(15, 21),
            "censored": rng.randint(7, 12),
        }.get(anc, 0)
        high = ht in _HIGH_PLANS
        plt = rng.choice(("both", "early", "early", "normal") if high else ("normal", "normal", "early", "both"))
        hb = rng.choice(("both", "early", "normal") if high else ("normal", "normal", "early"))
        ld = (
            ("administration", "administration", "order", "assumed", "registry")[i % 5]
            if not live
            else "administration"
        )
        p = Planted(
            pid,
            day0,
            anc,
            param,
            ht,
            plt,
            hb,
            ld,
            diabetes=rng.random() < 0.2,
            later_course=(i % 7 == 3 and not live and ld != "registry"),
            live=live,
            by_reference=(i % 6 == 1 and ld != "registry"),
        )
        p.expected = _expected(p)
        out.append(p)
    return out


@dataclass
class Written:
    planted: list[Planted]
    problems: dict[str, int]
    patients_without_course: int


def write_export(
    out_dir: Path,
    n: int,
    seed: int,
    *,
    observations: int = 0,
    gz: bool = False,
    bad_lines: bool = True,
    observation_files: int = 3,
    shuffle_seed: int | None = None,
) -> Written:
    """The export in ``out_dir`` and its truth beside it (``truth.csv``, ``registry.csv``, ``truth.json``)."""
    rng = random.Random(seed * 7919 + 1)
    order = random.Random(seed if shuffle_seed is None else shuffle_seed)
    ids = _Ids()
    planted = plan_cohort(n, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[bytes]] = {}

    def put(ftype: str, res: dict[str, Any] | bytes) -> None:
        line = res if isinstance(res, bytes) else json.dumps(res, separators=(",", ":")).encode()
        files.setdefault(ftype, []).append(line)

    for p in planted:
        for r in _resources(p, ids, observations, rng):
            put(r["resourceType"], r)
    put("Medication", CILTA_MEDICATION)
    # Two patients without a CAR-T course: labs and a Condition, no infusion.
    for j in range(2):
        pid = f"pt-{seed}-nocourse-{j}"
        put("Patient", {"resourceType": "Patient", "id": pid})
        put("Observation", _obs(ids, pid, "751-8", 3.1, "10*9/L", _ts(FIRST_DAY0)))
    problems = dict.fromkeys(("malformed-json", "not-a-resource", "blank-line", "type-mismatch"), 0)
    problems |= dict.fromkeys(("no-patient-reference", "missing-patient", "unparseable-date", "unit-rejected"), 0)
    if bad_lines:
        victim = planted[0]
        line = json.dumps(_obs(ids, victim.pid, "751-8", 2.0, "10*9/L", _ts(victim.day0 + timedelta(days=300))))
        put("Observation", line[: len(line) - 25].encode())  # truncated mid-line: names its patient
        put("Observation", b"{this is not json")
        put("Observation", b"[1, 2, 3]")
        put("Condition", b"")
        # A Condition in the Observation file: used by its own type (gives planted[1] diabetes).
        cond = {
            "resourceType": "Condition",
            "id": ids("c"),
            "code": {"coding": [{"system": SNOMED, "code": "44054006"}]},
            "subject": {"reference": f"Patient/{planted[1].pid}"},
        }
        put("Observation", cond)
        planted[1].diabetes = True
        planted[1].expected["diabetes"] = "yes"
        for k in range(3):  # a patient the export does not hold
            put("Observation", _obs(ids, "ghost-1", "751-8", 1.0 + k, "10*9/L", _ts(FIRST_DAY0)))
        no_subject = _obs(ids, "x", "751-8", 2.2, "10*9/L", _ts(FIRST_DAY0))
        del no_subject["subject"]
        put("Observation", no_subject)
        # An ANC whose date cannot be read (and no `issued`): it may be the newest, so the ANC at LD is
        # missing for that patient (planted on one whose HT plan has no stale values). A platelet count
        # in a rejected unit outside every course window (day +150): reported, no answer depends on it.
        victim2 = next(p for p in planted[2:] if p.ht != "indeterminate")
        put("Observation", _obs(ids, victim2.pid, "751-8", 2.0, "10*9/L", "2024-02-30T08:00:00+00:00"))
        victim2.anc_untimed = True
        fresh = _expected(victim2)
        for key in ("ht_min", "ht_max", "ht_group"):
            victim2.expected[key] = fresh[key]
        victim2.expected["flags"] = "|".join(
            sorted({*victim2.expected["flags"].split("|"), "untimed:anc", "untrusted:anc"})
        )
        late = planted[2].day0 + timedelta(days=150)
        put("Observation", _obs(ids, planted[2].pid, "777-3", 120, "furlongs", _ts(late)))
        problems |= {"malformed-json": 2, "not-a-resource": 1, "blank-line": 1, "type-mismatch": 1}
        problems |= {"missing-patient": 3, "no-patient-reference": 1, "unparseable-date": 1, "unit-rejected": 1}
        planted[0].expected["flags"] = "|".join(sorted({*planted[0].expected["flags"].split("|"), "unreadable-lines"}))

    for ftype, lines in files.items():
        order.shuffle(lines)
        parts = observation_files if ftype == "Observation" else 1
        for k in range(parts):
            name = f"{ftype}.{k:03d}.ndjson" if parts > 1 else f"{ftype}.ndjson"
            body = b"".join(line + b"\n" for line in lines[k::parts])
            if gz:
                (out_dir / f"{name}.gz").write_bytes(gzip.compress(body, mtime=0))
            else:
                (out_dir / name).write_bytes(body)
    return Written(planted, problems, 2)


def write_truth(where: Path, w: Written, seed: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    with (where / "truth.csv").open("w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(COLUMNS)
        for p in sorted(w.planted, key=lambda p: p.pid):
            wr.writerow([p.expected[c] for c in COLUMNS])
    with (where / "registry.csv").open("w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(("patient", "infusion_date", "ld_start"))
        for p in w.planted:
            if p.ld == "registry":
                wr.writerow((p.pid, p.day0.isoformat(), (p.day0 - timedelta(days=5)).isoformat()))
    truth = {
        "seed": seed,
        "asOf": AS_OF.isoformat(),
        "patients": len(w.planted) + w.patients_without_course,
        "patientsWithoutCourse": w.patients_without_course,
        "courses": len(w.planted),
        "problems": w.problems,
        "note": "courses.csv must equal truth.csv when run with --registry registry.csv --as-of asOf",
    }
    (where / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m service.cohort.synthetic", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="the export is written to OUT_DIR/export, the truth to OUT_DIR")
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--observations", type=int, default=0, help="pad each patient to about N Observations")
    ap.add_argument("--gz", action="store_true", help="write .ndjson.gz")
    args = ap.parse_args(argv)
    w = write_export(args.out_dir / "export", args.patients, args.seed, observations=args.observations, gz=args.gz)
    write_truth(args.out_dir, w, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
