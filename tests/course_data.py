"""FHIR data for post-infusion courses (clinical-spec §9.7, C1–C8) and patient-view requests, shared by
the HTTP tests (tests/test_follow_up.py) and the real-server tests (tests/test_integration_follow_up.py).

A course is laid out relative to the real "today" (the service reads its own clock), with day 0 =
today − `day`: the infusion at 14:00 UTC on day 0, fludarabine and cyclophosphamide given on days −5
to −3 at 09:00 (so LD start = day −5 09:00), the HT labs on day −6 at 08:00 and the course's results
at 08:00 on their course day. Only results up to today exist (as in a real chart). The facility zone
of the test settings is UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from service.cards.follow_up_hook import ADMINISTRATIONS_KEY, INFUSION_KEY, ORDERS_KEY
from service.clinical.valuesets import value_sets
from tests.cases import RXNORM, fhir_authorization, obs, searchset

AXI_CEL = "1987402"
FLUDARABINE, CYCLOPHOSPHAMIDE, FILGRASTIM = "24698", "3002", "68442"
LOINC_CODES = {"anc": "751-8", "platelets": "777-3", "hemoglobin": "718-7", "crp": "1988-5", "ferritin": "2276-4"}
UNITS = {"anc": "10*9/L", "platelets": "10*9/L", "hemoglobin": "g/dL", "crp": "mg/dL", "ferritin": "ng/mL"}
# HT labs on day −6: normal (HT-low, score 0) unless a case overrides them; ferritin 2500 → 2 points → HT-high.
NORMAL_LD_LABS = {"anc": 3.0, "platelets": 250, "hemoglobin": 12.0, "crp": 0.5, "ferritin": 300}
HIGH_LD_LABS = {**NORMAL_LD_LABS, "ferritin": 2500}

Value = float | str  # a string like "<0.1" is a censored result


def today() -> date:
    return datetime.now(UTC).date()


def at(day0: date, day: int, hour: int) -> str:
    return datetime.combine(day0 + timedelta(days=day), time(hour), UTC).isoformat()


def daily(first: int, last: int, value: Value) -> dict[int, Value]:
    return dict.fromkeys(range(first, last + 1), value)


def medication(
    rtype: str, rid: str, patient: str, code: str, name: str, when: str | None, *, status: str = "completed"
) -> dict:
    r: dict[str, Any] = {
        "resourceType": rtype,
        "id": rid,
        "status": status,
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": name}], "text": name},
    }
    if rtype == "MedicationAdministration":
        if when is not None:
            r["effectiveDateTime"] = when
    else:
        r["intent"] = "order"
        if when is not None:
            r["authoredOn"] = when
    return r


@dataclass(frozen=True)
class Course:
    """One test patient's course: `day` is today's course day; results by course day per analyte."""

    name: str
    day: int
    anc: Mapping[int, Value] = field(default_factory=dict)
    platelets: Mapping[int, Value] = field(default_factory=dict)
    hemoglobin: Mapping[int, Value] = field(default_factory=dict)
    ld_labs: Mapping[str, Value] = field(default_factory=lambda: HIGH_LD_LABS)
    gcsf_days: Iterable[int] = ()
    ld: str = "administration"  # "administration", "order" or "none"
    infusion: bool = True

    def day0(self) -> date:
        return today() - timedelta(days=self.day)

    def resources(self, patient: str) -> list[dict]:
        d0 = self.day0()
        out: list[dict] = []
        if self.infusion:
            out.append(
                medication("MedicationAdministration", f"{patient}-cart", patient, AXI_CEL, "Yescarta", at(d0, 0, 14))
            )
        for i, (code, name) in enumerate(((FLUDARABINE, "fludarabine"), (CYCLOPHOSPHAMIDE, "cyclophosphamide"))):
            if self.ld == "administration":
                out += [
                    medication("MedicationAdministration", f"{patient}-ld{i}-{-d}", patient, code, name, at(d0, d, 9))
                    for d in (-5, -4, -3)
                ]
            elif self.ld == "order":
                mr = medication("MedicationRequest", f"{patient}-ldo{i}", patient, code, name, at(d0, -9, 10))
                mr["dosageInstruction"] = [{"timing": {"repeat": {"boundsPeriod": {"start": at(d0, -5, 9)}}}}]
                out.append(mr)
        for d in self.gcsf_days:
            if d <= self.day:
                out.append(
                    medication(
                        "MedicationAdministration",
                        f"{patient}-gcsf-{d}",
                        patient,
                        FILGRASTIM,
                        "filgrastim",
                        at(d0, d, 10),
                    )
                )
        for analyte, value in self.ld_labs.items():
            out.append(_lab(patient, analyte, f"ld-{analyte}", value, at(d0, -6, 8)))
        for analyte in ("anc", "platelets", "hemoglobin"):
            for d, value in getattr(self, analyte).items():
                if d <= self.day:
                    out.append(_lab(patient, analyte, f"{analyte}-{d}", value, at(d0, d, 8)))
        return out


def _lab(patient: str, analyte: str, stem: str, value: Value, when: str) -> dict:
    comparator = None
    if isinstance(value, str):
        comparator, value = value[0], float(value[1:])
    return obs(
        f"{patient}-{stem}", LOINC_CODES[analyte], value, UNITS[analyte], when, comparator=comparator, patient=patient
    )


def full_prefetch(resources: list[dict]) -> dict[str, dict]:
    """Every key the follow-up service reads (stage 1 and stage 2), as a client that sends all of them would."""
    vs = value_sets()
    keys: dict[str, list[dict]] = {INFUSION_KEY: [], ADMINISTRATIONS_KEY: [], ORDERS_KEY: []}
    keys |= {k: [] for k in ("anc", "hemoglobin", "platelets", "crp", "ferritin")}
    for r in resources:
        if r["resourceType"] == "Observation":
            code = r["code"]["coding"][0]["code"]
            keys[next(k for k in keys if k in vs.prefetch_codes and code in vs.prefetch_codes[k])].append(r)
        elif r["resourceType"] == "MedicationAdministration":
            code = r["medicationCodeableConcept"]["coding"][0]["code"]
            keys[INFUSION_KEY if code in vs.product_rxnorm else ADMINISTRATIONS_KEY].append(r)
        else:
            keys[ORDERS_KEY].append(r)
    return {k: searchset(v) for k, v in keys.items()}


def patient_view(
    patient: str, *, prefetch: dict | None = None, fhir_server: str | None = None, token: str | None = None
) -> dict:
    req: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": "3f0e4c39-8d3c-4f51-9a43-8e0c8a1d0b7e",
        "context": {"userId": "Practitioner/doc1", "patientId": patient},
    }
    if prefetch is not None:
        req["prefetch"] = prefetch
    if fhir_server:
        req["fhirServer"] = fhir_server
        req["fhirAuthorization"] = fhir_authorization(token)
    return req


# The worked course cases of clinical-spec §9.7, each seen on a day of the live course on which the
# follow-up service has something to say (HT-high at LD and no G-CSF: F4 on days +2..+30; without
# ANC results after LD: F5 after day +30), with what is already determined that day. A completed course
# (day > +100) is outside every course: no card (checked separately).
C1 = Course("C1", 30, anc={0: 3.0, **daily(1, 5, 0.3), **daily(6, 100, 2.0)})
C2 = Course("C2", 15, anc={**daily(0, 15, 0.2), **daily(16, 100, 1.8)})
C3 = Course("C3", 25, anc={**daily(0, 4, 0.3), **daily(5, 24, 1.8), 25: 0.8, **daily(26, 100, 1.6)})
C4 = Course("C4", 30, anc={**daily(0, 4, 0.3), **daily(5, 20, 1.8), 21: 0.8, **daily(22, 100, 1.6)})
C5 = Course("C5", 30, anc={0: 0.3, 3: 0.3, 10: 0.3, **daily(14, 100, 2.0)})
C6 = Course("C6", 9, anc={**daily(0, 9, "<0.1"), **daily(10, 100, 1.6)})
C7A = Course("C7A", 60, platelets={3: 45, 35: 60, 50: 40})
C7B = Course("C7B", 40, platelets={3: 60})
C8 = Course("C8", 9, anc=daily(0, 9, 0.3), gcsf_days=range(2, 10))
COURSES = (C1, C2, C3, C4, C5, C6, C7A, C7B, C8)

# What each case's course extension must say on its day (hand-derived from §9.3–§9.6; "days after today
# are unknown"). Only the fields a case is about; `None` = the field is absent (e.g. no recovery yet).
EXPECTED: dict[str, dict[str, Any]] = {
    # C1 day 30: d1–d5 sure below, d6–d30 sure not, d31–60 unknown (30) → [5, 35]; recovery d6; a second
    # dip or a 14-day run can still come after today, so not yet quick.
    "C1": {
        "severeNeutropeniaDays": {"min": 5, "max": 35},
        "severeNeutropenia14": "unknown",
        "severeNeutropeniaEarly": "yes",
        "ancRecoveryDay": 6,
        "phenotype": {"candidates": ["aplastic", "intermittent", "quick"], "final": False},
        "currentSevereRun": {"min": 0, "max": 0},
        "items": ["F4"],
    },
    # C2 day 15: 16 sure days below (d0–d15) → ≥14 and protracted yes, aplastic final; the run goes on.
    "C2": {
        "severeNeutropeniaDays": {"min": 16, "max": 61},
        "severeNeutropenia14": "yes",
        "protractedSevereNeutropenia": "yes",
        "ancRecoveryDay": None,
        "phenotype": {"value": "aplastic", "final": True},
        "currentSevereRun": {"min": 16, "max": 16},
        "items": ["F1", "F2", "F3", "F4"],
    },
    # C3 day 25: the second dip on d25 (0.8) → prolonged yes; intermittent unless a 14-day run still comes.
    "C3": {
        "severeNeutropeniaDays": {"min": 5, "max": 40},
        "prolongedNeutropenia": "yes",
        "ancRecoveryDay": 5,
        "phenotype": {"candidates": ["aplastic", "intermittent"], "final": False},
        "items": ["F4"],
    },
    # C4 day 30: the dip on d21 is before day 22 → unclassified, unless a later dip or a 14-day run comes.
    "C4": {
        "severeNeutropeniaDays": {"min": 5, "max": 35},
        "prolongedNeutropenia": "yes",
        "phenotype": {"candidates": ["aplastic", "intermittent", "unclassified"], "final": False},
        "items": ["F4"],
    },
    # C5 day 30: d1–d2 filled (gap 3), d4–d9 and d11–d13 unknown (gaps 7 and 4), d31–60 unknown.
    "C5": {
        "severeNeutropeniaDays": {"min": 5, "max": 44},
        "severeNeutropenia14": "unknown",
        "phenotype": {"candidates": ["aplastic", "intermittent", "quick", "unclassified"], "final": False},
        "items": ["F4"],
    },
    # C6 day 9: ten censored "<0.1" days: surely below 0.1 and 0.5.
    "C6": {
        "severeNeutropeniaDays": {"min": 10, "max": 61},
        "profoundNeutropenia": "yes",
        "protractedProfoundNeutropenia": "yes",
        "protractedSevereNeutropenia": "yes",
        "currentSevereRun": {"min": 10, "max": 10},
        "items": ["F1", "F2", "F4"],
    },
    # C7: PLT d3 45, d35 60, d50 40 (day 60) → early and late yes; PLT d3 60 only (day 40): early no
    # (window over), late unknown. No ANC after LD → F5 (HT-high, days 31–90, latest ANC > 8 days old).
    "C7A": {"severeThrombocytopeniaEarly": "yes", "severeThrombocytopeniaLate": "yes", "items": ["F5"]},
    "C7B": {"severeThrombocytopeniaEarly": "no", "severeThrombocytopeniaLate": "unknown", "items": ["F5"]},
    # C8 day 9 (the spec's own live case): F1 and F2, not F4 (filgrastim given from day 2).
    "C8": {
        "severeNeutropeniaDays": {"min": 10, "max": 61},
        "severeNeutropenia14": "unknown",
        "currentSevereRun": {"min": 10, "max": 10},
        "items": ["F1", "F2"],
    },
}
MEASURES = {
    "severeNeutropeniaDays",
    "severeNeutropenia14",
    "severeNeutropeniaEarly",
    "severeNeutropeniaLate",
    "protractedSevereNeutropenia",
    "profoundNeutropenia",
    "protractedProfoundNeutropenia",
    "prolongedNeutropenia",
    "severeThrombocytopeniaEarly",
    "severeThrombocytopeniaLate",
    "severeAnemiaEarly",
    "severeAnemiaLate",
    "ancRecoveryDay",
    "followUpDays",
}


def check_course(course: dict, name: str) -> None:
    """A course extension against EXPECTED[name] (measures, phenotype, current run, items)."""
    for key, want in EXPECTED[name].items():
        where = course["measures"] if key in MEASURES else course
        got = where.get(key)
        if key == "phenotype" and "candidates" in want:  # the order is course.py's (not part of §9.8)
            got = {**got, "candidates": sorted(got.get("candidates", []))}
        assert got == want, (name, key, got, want)
