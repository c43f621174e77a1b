"""The worked cases of clinical-spec §7 (T1–T39) as FHIR data, shared by the HTTP tests and the
integration tests against a real FHIR server.

Defaults (spec §7): ANC 3.0 ×10⁹/L, Hb 12.0 g/dL, PLT 250 ×10⁹/L, CRP 0.5 mg/dL, ferritin 300
ng/mL, all final and collected T0 − 1 day. A case replaces one analyte's observations (or
removes them with None) and states the expected result.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

T0 = "2024-03-10T10:00:00+00:00"
DAY_BEFORE = "2024-03-09T10:00:00+00:00"


def obs(
    oid: str,
    code: str,
    value: Any,
    unit: str | None,
    when: str = DAY_BEFORE,
    *,
    comparator: str | None = None,
    status: str = "final",
    system: str | None = UCUM,
    unit_code: str | None = None,
    patient: str = "PATIENT",
    **extra: Any,
) -> dict:
    q: dict[str, Any] = {"value": value}
    if comparator:
        q["comparator"] = comparator
    if unit is not None:
        q["unit"] = unit
        if system:
            q["system"] = system
            q["code"] = unit_code or unit
    o = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
        ],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        "valueQuantity": q,
    }
    o.update(extra)
    return o


DEFAULTS: dict[str, list[dict]] = {
    "anc": [obs("anc", "751-8", 3.0, "10*9/L")],
    "hemoglobin": [obs("hb", "718-7", 12.0, "g/dL")],
    "platelets": [obs("plt", "777-3", 250, "10*9/L")],
    "crp": [obs("crp", "1988-5", 0.5, "mg/dL")],
    "ferritin": [obs("fer", "2276-4", 300, "ng/mL")],
}


@dataclass
class Case:
    name: str
    labs: dict[str, list[dict] | None]
    score: tuple[int, int]
    group: str
    ultra: str = "no"
    points: dict[str, tuple[int, int]] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    provisional: tuple[int, int, str] | None = None
    flags: tuple[str, ...] = ()

    def observations(self, patient: str) -> list[dict]:
        merged = {**DEFAULTS, **self.labs}
        out = []
        for group_obs in merged.values():
            for o in group_obs or []:
                # A deep copy: tests edit what they get, and the defaults are shared by every case.
                o = {**copy.deepcopy(o), "id": f"{patient}-{o['id']}", "subject": {"reference": f"Patient/{patient}"}}
                out.append(o)
        return out


def _one(analyte: str, *observations: dict) -> dict[str, list[dict] | None]:
    return {analyte: list(observations)}


CASES: list[Case] = [
    Case("T1", {}, (0, 0), "low"),
    Case(
        "T2",
        _one("anc", obs("anc", "751-8", 1200, "/uL")),
        (1, 1),
        "low",
        points={"anc": (1, 1)},
        flags=("at-cutoff:anc",),
    ),
    Case("T3", _one("anc", obs("anc", "751-8", 1210, "/uL")), (0, 0), "low"),
    Case("T4", _one("hemoglobin", obs("hb", "718-7", 9.0, "g/dL")), (1, 1), "low", points={"hemoglobin": (1, 1)}),
    Case("T5", _one("hemoglobin", obs("hb", "718-7", 9.1, "g/dL")), (0, 0), "low"),
    Case("T6", _one("hemoglobin", obs("hb", "718-7", 90, "g/L")), (1, 1), "low", points={"hemoglobin": (1, 1)}),
    Case("T7", _one("hemoglobin", obs("hb", "59260-0", 5.58, "mmol/L")), (1, 1), "low"),
    Case("T8", _one("hemoglobin", obs("hb", "59260-0", 5.59, "mmol/L")), (0, 0), "low"),
    Case("T9", _one("platelets", obs("plt", "777-3", 75, "10*9/L")), (2, 2), "high", points={"platelets": (2, 2)}),
    Case("T10", _one("platelets", obs("plt", "777-3", 75500, "/uL")), (1, 1), "low", points={"platelets": (1, 1)}),
    Case("T11", _one("platelets", obs("plt", "777-3", 175, "10*3/uL")), (1, 1), "low"),
    Case("T12", _one("platelets", obs("plt", "777-3", 176, "10*9/L")), (0, 0), "low"),
    Case("T13", _one("crp", obs("crp", "1988-5", 30, "mg/L")), (1, 1), "low", points={"crp": (1, 1)}),
    Case("T14", _one("crp", obs("crp", "1988-5", 29.9, "mg/L")), (0, 0), "low"),
    Case("T15", _one("ferritin", obs("fer", "2276-4", 650, "ng/mL")), (1, 1), "low"),
    Case("T16", _one("ferritin", obs("fer", "2276-4", 649, "ug/L")), (0, 0), "low"),
    Case(
        "T17",
        _one("ferritin", obs("fer", "2276-4", 2000, "ng/mL")),
        (2, 2),
        "high",
        points={"ferritin": (2, 2)},
        flags=("boundary-ambiguity:ferritin",),
    ),
    Case("T18", _one("ferritin", obs("fer", "2276-4", 1999, "ng/mL")), (1, 1), "low"),
    Case(
        "T19",
        {
            "anc": [obs("anc", "751-8", 0.5, "10*9/L")],
            "hemoglobin": [obs("hb", "718-7", 8.0, "g/dL")],
            "platelets": [obs("plt", "777-3", 40, "10*9/L")],
            "crp": [obs("crp", "1988-5", 5.0, "mg/dL")],
            "ferritin": [obs("fer", "2276-4", 3500, "ng/mL")],
        },
        (7, 7),
        "high",
        "yes",
    ),
    Case(
        "T20",
        {
            "anc": [obs("anc", "751-8", 1.0, "10*9/L")],
            "hemoglobin": [obs("hb", "718-7", 8.5, "g/dL")],
            "platelets": [obs("plt", "777-3", 60, "10*9/L")],
            "crp": [obs("crp", "1988-5", 1.0, "mg/dL")],
            "ferritin": [obs("fer", "2276-4", 700, "ng/mL")],
        },
        (5, 5),
        "high",
        "yes",
    ),
    Case(
        "T21",
        {
            "anc": [obs("anc", "751-8", 1.0, "10*9/L")],
            "hemoglobin": [obs("hb", "718-7", 8.5, "g/dL")],
            "platelets": [obs("plt", "777-3", 60, "10*9/L")],
            "crp": [obs("crp", "1988-5", 1.0, "mg/dL")],
            "ferritin": [obs("fer", "2276-4", 500, "ng/mL")],
        },
        (4, 4),
        "high",
        "no",
    ),
    Case(
        "T22",
        {"anc": None, "platelets": [obs("plt", "777-3", 60, "10*9/L")]},
        (2, 3),
        "high",
        status={"anc": "missing"},
    ),
    Case(
        "T23",
        {"ferritin": None, "platelets": [obs("plt", "777-3", 200, "10*9/L")]},
        (0, 2),
        "indeterminate",
        status={"ferritin": "missing"},
    ),
    Case("T24", {"crp": None}, (0, 1), "low", status={"crp": "missing"}),
    Case("T25", {"hemoglobin": None, "ferritin": [obs("fer", "2276-4", 800, "ng/mL")]}, (1, 2), "indeterminate"),
    Case("T26", dict.fromkeys(DEFAULTS), (0, 7), "indeterminate", "possible"),
    Case(
        "T27",
        {"anc": [obs("wbc", "6690-2", 2.4, "10*9/L"), obs("neut", "770-8", 50, "%")]},
        (1, 1),
        "low",
        points={"anc": (1, 1)},
    ),
    Case(
        "T28",
        {"anc": [obs("wbc", "6690-2", 2.5, "10*3/uL"), obs("segs", "769-0", 45, "%"), obs("bands", "764-1", 5, "%")]},
        (0, 0),
        "low",
        points={"anc": (0, 0)},
    ),
    Case(
        "T29",
        {
            "anc": [obs("anc", "751-8", 1.0, "10*9/L")],
            "hemoglobin": [obs("hb", "718-7", 8.5, "g/dL")],
            "platelets": [obs("plt", "777-3", 100, "10*9/L")],
            "crp": None,
            "ferritin": None,
        },
        (3, 6),
        "high",
        "possible",
    ),
    Case(
        "T30",
        {"platelets": [obs("plt", "777-3", 150000, "/uL")], "ferritin": [obs("fer", "2276-4", 1000, "ng/mL")]},
        (2, 2),
        "high",
    ),
    Case(
        "T31",
        _one("platelets", obs("plt", "777-3", 20, "10*9/L", comparator="<")),
        (2, 2),
        "high",
        points={"platelets": (2, 2)},
        status={"platelets": "censored"},
    ),
    Case(
        "T32",
        _one("ferritin", obs("fer", "2276-4", 1500, "ng/mL", comparator=">")),
        (1, 2),
        "indeterminate",
        points={"ferritin": (1, 2)},
        status={"ferritin": "censored"},
    ),
    Case(
        "T33",
        {"crp": [obs("hscrp", "30522-7", 10, "mg/L", comparator=">")]},
        (0, 1),
        "low",
        points={"crp": (0, 1)},
        status={"crp": "censored"},
    ),
    Case(
        "T34",
        _one("platelets", obs("plt", "777-3", 60, "10*9/L", "2024-03-07T07:00:00+00:00")),
        (2, 2),
        "high",
        status={"platelets": "current"},
    ),
    Case(
        "T35",
        _one("platelets", obs("plt", "777-3", 60, "10*9/L", "2024-03-06T23:00:00+00:00")),
        (0, 2),
        "indeterminate",
        status={"platelets": "stale"},
        provisional=(2, 2, "high"),
    ),
    Case(
        "T36",
        _one("platelets", obs("plt", "777-3", 60, "10*9/L", "2024-03-10T12:00:00+00:00")),
        (0, 2),
        "indeterminate",
        status={"platelets": "missing"},
    ),
    Case("T37", _one("anc", obs("anc", "751-8", 1200, "10*3/uL")), (0, 1), "low", status={"anc": "implausible"}),
    Case(
        "T38",
        _one("platelets", obs("plt", "777-3", 70, "G/L", system=None)),
        (2, 2),
        "high",
        points={"platelets": (2, 2)},
    ),
    Case(
        "T39",
        {
            "crp": [
                {**obs("crpq", "11039-5", 0, None), "valueQuantity": None, "valueCodeableConcept": {"text": "Positive"}}
            ]
        },
        (0, 1),
        "low",
        status={"crp": "missing"},
    ),
]
# T39 carries a qualitative CRP: drop the quantity the helper built.
for _c in CASES:
    for _list in _c.labs.values():
        for _o in _list or []:
            if _o.get("valueQuantity") is None:
                _o.pop("valueQuantity", None)

BY_NAME = {c.name: c for c in CASES}


def ld_orders(patient: str, start: str | None = T0, *, drugs: tuple[str, ...] = ("24698", "3002")) -> list[dict]:
    names = {"24698": "fludarabine", "3002": "cyclophosphamide", "134547": "bendamustine"}
    out = []
    for i, code in enumerate(drugs, start=1):
        mr: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": f"ld{i}",
            "status": "draft",
            "intent": "order",
            "subject": {"reference": f"Patient/{patient}"},
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": code, "display": names[code]}],
                "text": names[code],
            },
        }
        if start:
            mr["dosageInstruction"] = [{"timing": {"repeat": {"boundsPeriod": {"start": start}}}}]
        out.append(mr)
    return out


def searchset(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def prefetch_for(observations: list[dict], patient: str) -> dict:
    """Full prefetch keyed as our discovery asks, grouped by analyte key."""
    from service.clinical.valuesets import value_sets

    vs = value_sets()
    groups: dict[str, list[dict]] = {k: [] for k in vs.prefetch_codes}
    for o in observations:
        code = o["code"]["coding"][0]["code"]
        key = next((k for k, codes in vs.prefetch_codes.items() if code in codes), None)
        if key:
            groups[key].append(o)
    pre = {k: searchset(v) for k, v in groups.items()}
    pre["patient"] = {"resourceType": "Patient", "id": patient, "birthDate": "1960-01-01", "gender": "female"}
    pre["conditions"] = searchset([])
    pre["ecog"] = searchset([])
    pre["medications"] = searchset([])
    return pre


def fhir_authorization(token: str | None = None) -> dict[str, Any]:
    """The hook's fhirAuthorization as an EHR sends it (every service's requests use the same shape)."""
    return {
        "access_token": token or "secret-token-xyz",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds-service",
    }


def hook_request(
    hook: str,
    patient: str,
    observations: list[dict] | None,
    *,
    orders: list[dict] | None = None,
    prefetch: dict | None = None,
    selections: list[str] | None = None,
    fhir_server: str | None = None,
    token: str | None = None,
) -> dict:
    orders = ld_orders(patient) if orders is None else orders
    ctx: dict[str, Any] = {
        "userId": "Practitioner/doc1",
        "patientId": patient,
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]},
    }
    if hook == "order-select":
        ctx["selections"] = selections if selections is not None else [f"{o['resourceType']}/{o['id']}" for o in orders]
    req: dict[str, Any] = {"hook": hook, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": ctx}
    if prefetch is not None:
        req["prefetch"] = prefetch
    elif observations is not None:
        req["prefetch"] = prefetch_for(observations, patient)
    if fhir_server:
        req["fhirServer"] = fhir_server
        req["fhirAuthorization"] = fhir_authorization(token)
    return req
