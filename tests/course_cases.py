"""The worked course cases of clinical-spec §9.7 (C1–C8) as FHIR data, shared by the unit tests of
``service.clinical.course`` and the HTTP tests of the follow-up service.

Day 0 is ``DAY0`` (a Yescarta MedicationAdministration at 10:00 facility time), LD starts on day −5
(a fludarabine administration); results are collected at 08:00 facility time on their course day.
Completed courses are looked at on ``COMPLETED_TODAY`` (day +150).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.cases import RXNORM, obs

TZ = ZoneInfo("Europe/Berlin")
PATIENT = "PATIENT"
DAY0 = date(2024, 3, 15)
COMPLETED_TODAY = DAY0 + timedelta(days=150)


def at(day: int, hour: int = 8) -> str:
    """Course day ``day`` at ``hour`` facility time, as a FHIR dateTime with offset."""
    return datetime.combine(DAY0 + timedelta(days=day), time(hour), TZ).isoformat()


def administration(
    oid: str,
    medication: str,
    when: str | None,
    *,
    status: str = "completed",
    rxnorm: str | None = None,
    patient: str = PATIENT,
    **extra: Any,
) -> dict:
    cc: dict[str, Any] = {"text": medication}
    if rxnorm:
        cc["coding"] = [{"system": RXNORM, "code": rxnorm, "display": medication}]
    r: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": oid,
        "status": status,
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": cc,
    }
    if when is not None:
        r["effectiveDateTime"] = when
    r.update(extra)
    return r


def infusion(day: int = 0, oid: str = "cart", **kw: Any) -> dict:
    return administration(oid, "Yescarta (axicabtagene ciloleucel)", at(day, 10), **kw)


def ld_given(day: int = -5, oid: str = "flu", drug: str = "fludarabine") -> dict:
    return administration(oid, drug, at(day, 9))


def anc(day: int, value: float, comparator: str | None = None) -> dict:
    return obs(f"anc-d{day}", "751-8", value, "10*9/L", at(day), comparator=comparator)


def plt(day: int, value: float, oid: str = "plt") -> dict:
    return obs(f"{oid}-d{day}", "777-3", value, "10*9/L", at(day))


def daily(first: int, last: int, value: float, comparator: str | None = None) -> list[dict]:
    return [anc(d, value, comparator) for d in range(first, last + 1)]


@dataclass
class CourseCase:
    name: str
    labs: list[dict]
    # The expected §9.8 fields that the case states (measures by their extension name).
    measures: dict[str, Any] = field(default_factory=dict)
    phenotype: dict[str, Any] = field(default_factory=dict)
    today_day: int | None = None  # live course: today's course day; None = completed
    current_run: tuple[int, int] | None = None
    anc_recovery_day: int | None = None
    extra_resources: list[dict] = field(default_factory=list)


C1 = CourseCase(
    "C1",
    [anc(0, 3.0), *daily(1, 5, 0.3), *daily(6, 100, 2.0)],
    {
        "severeNeutropeniaDays": {"min": 5, "max": 5},
        "severeNeutropenia14": "no",
        "protractedSevereNeutropenia": "no",
        "profoundNeutropenia": "no",
        "prolongedNeutropenia": "no",
        "ancRecoveryDay": 6,
    },
    {"value": "quick", "final": True},
)
C2 = CourseCase(
    "C2",
    [*daily(0, 15, 0.2), *daily(16, 100, 1.8)],
    {
        "severeNeutropeniaDays": {"min": 16, "max": 16},
        "severeNeutropenia14": "yes",
        "protractedSevereNeutropenia": "yes",
        "ancRecoveryDay": 16,
    },
    {"value": "aplastic", "final": True},
)
C3 = CourseCase(
    "C3",
    [*daily(0, 4, 0.3), *daily(5, 24, 1.8), anc(25, 0.8), *daily(26, 100, 1.6)],
    {"severeNeutropeniaDays": {"min": 5, "max": 5}, "prolongedNeutropenia": "yes"},
    {"value": "intermittent", "final": True},
)
C4 = CourseCase(
    "C4",
    [*daily(0, 4, 0.3), *daily(5, 20, 1.8), anc(21, 0.8), *daily(22, 100, 1.6)],
    {"severeNeutropeniaDays": {"min": 5, "max": 5}, "prolongedNeutropenia": "yes"},
    {"value": "unclassified", "final": True},
)
C5 = CourseCase(
    "C5",
    [anc(0, 0.3), anc(3, 0.3), anc(10, 0.3), *daily(14, 100, 2.0)],
    {"severeNeutropeniaDays": {"min": 5, "max": 14}, "severeNeutropenia14": "unknown"},
    {"candidates": ["quick", "aplastic", "unclassified"], "final": False},
)
C6 = CourseCase(
    "C6",
    [*daily(0, 9, 0.1, "<"), *daily(10, 100, 1.6)],
    {
        "severeNeutropeniaDays": {"min": 10, "max": 10},
        "profoundNeutropenia": "yes",
        "protractedProfoundNeutropenia": "yes",
    },
    {"value": "quick", "final": True},
)
C7A = CourseCase(
    "C7-first",
    [plt(3, 45), plt(35, 60), plt(50, 40)],
    {"severeThrombocytopeniaEarly": "yes", "severeThrombocytopeniaLate": "yes"},
)
C7B = CourseCase(
    "C7-second",
    [plt(3, 60)],
    {"severeThrombocytopeniaEarly": "no", "severeThrombocytopeniaLate": "unknown"},
)
C8 = CourseCase(
    "C8",
    daily(0, 9, 0.3),
    {"severeNeutropeniaDays": {"min": 10, "max": 61}, "severeNeutropenia14": "unknown"},
    {"candidates": ["quick", "intermittent", "aplastic", "unclassified"], "final": False},
    today_day=9,
    current_run=(10, 10),
    # HT-high at LD: platelets 60 (2 points) on day −6; filgrastim given daily from day 2.
    extra_resources=[
        obs("ld-plt", "777-3", 60, "10*9/L", at(-6)),
        *(administration(f"gcsf-d{d}", "filgrastim", at(d, 12)) for d in range(2, 10)),
    ],
)

CASES = [C1, C2, C3, C4, C5, C6, C7A, C7B, C8]


def resources(case: CourseCase) -> list[dict]:
    """Everything the EHR holds for the case: infusion, LD administration, labs, the rest."""
    return [infusion(), ld_given(), *case.labs, *case.extra_resources]


def today(case: CourseCase) -> date:
    return COMPLETED_TODAY if case.today_day is None else DAY0 + timedelta(days=case.today_day)
