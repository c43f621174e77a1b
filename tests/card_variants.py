"""Hook requests that span what a card can hold: every worked case (clinical-spec §7) and the
variants that add text (NRM flags, EASIX, site switches, notes). Shared by the card-budget test and
bench/card_render.py, so that the test and the pixel measurement look at the same cards."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.cases import BY_NAME, CASES, LOINC, RXNORM, hook_request, ld_orders, obs, prefetch_for, searchset

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SIGN = "/cds-services/hematotox-order-sign"
PATIENT = "p"

# The four cards of the before/after table (issue 12): HIGH, LOW, indeterminate, provisional.
HEADLINE = {"HIGH": "T21", "LOW": "T1", "indeterminate": "T23", "provisional": "T35"}


@dataclass(frozen=True)
class Variant:
    name: str
    request: dict[str, Any]
    # dev_settings() overrides: {} is the default configuration.
    settings: dict[str, Any] = field(default_factory=dict)


def _diabetes() -> dict:
    return {
        "resourceType": "Condition",
        "id": "dm",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "code": {"coding": [{"system": ICD10CM, "code": "E11.9"}]},
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "verificationStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]
        },
    }


def medication(
    mid: str, rxnorm: str | None, text: str, *, status: str = "active", authored: str | None = "2024-03-08"
) -> dict[str, Any]:
    """A MedicationRequest on the chart: coded (RxNorm) or text-only (rxnorm None)."""
    concept: dict[str, Any] = {"text": text}
    if rxnorm:
        concept["coding"] = [{"system": RXNORM, "code": rxnorm, "display": text}]
    mr: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "medicationCodeableConcept": concept,
    }
    if authored:
        mr["authoredOn"] = authored
    return mr


# One live order of every prophylaxis class, coded and text-only.
ALL_ORDERED = [
    medication("m-gcsf", "68442", "filgrastim"),
    medication("m-av", None, "Valtrex 500 mg tablet"),
    medication("m-pjp", "10831", "trimethoprim-sulfamethoxazole"),
    medication("m-fq", None, "levofloxacin 500 mg"),
    medication("m-az", "282446", "posaconazole", authored="2024-03-09T23:30:00+00:00"),
]


def _request(
    case: str,
    *,
    diabetes: bool = False,
    ferritin_high: bool = False,
    easix: bool = False,
    ecog: int | None = None,
    orders: list[dict] | None = None,
    drop: tuple[str, ...] = (),
    medications: list[dict] | None = None,
) -> dict[str, Any]:
    observations = BY_NAME[case].observations(PATIENT)
    if ferritin_high:
        for o in observations:
            if o["code"]["coding"][0]["code"] == "2276-4":
                o["referenceRange"] = [{"high": {"value": 200, "unit": "ng/mL"}}]
    if easix:
        observations += [
            obs("ldh", "2532-0", 410, "U/L", patient=PATIENT),
            obs("crea", "2160-0", 1.3, "mg/dL", patient=PATIENT),
        ]
    pre = prefetch_for(observations, PATIENT)
    pre["conditions"] = searchset([_diabetes()] if diabetes else [])
    if ecog is not None:
        e = obs("ecog", "89247-1", None, None, patient=PATIENT)
        e.pop("valueQuantity")
        e["code"] = {"coding": [{"system": LOINC, "code": "89247-1"}]}
        e["valueInteger"] = ecog
        pre["ecog"] = searchset([e])
    if medications is not None:
        pre["medications"] = searchset(medications)
    for key in drop:
        pre.pop(key, None)
    return hook_request("order-sign", PATIENT, None, prefetch=pre, orders=orders)


def variants() -> Iterator[Variant]:
    for case in CASES:
        yield Variant(case.name, _request(case.name))
    rich = {"diabetes": True, "ferritin_high": True, "easix": True, "ecog": 2}
    for name in ("T19", "T21", "T1", "T23", "T26", "T29", "T35"):
        yield Variant(f"{name}+NRM", _request(name, **rich))
        yield Variant(f"{name}+diabetes", _request(name, diabetes=True))
        yield Variant(f"{name}+ferritin", _request(name, ferritin_high=True))
    as_high = {"recommendations": {"treat_indeterminate_as_high": True}}
    for name in ("T23", "T26", "T35"):
        yield Variant(f"{name}+as-high", _request(name, **rich), as_high)
    yield Variant(
        "T21+disabled",
        _request("T21", **rich),
        {"recommendations": {"disabled": ["R5", "R11"], "monitoring_schedule": "CBC daily to day +14"}},
    )
    yield Variant("T35+no-conditions", _request("T35", drop=("conditions",)))
    for name in ("T21", "T35"):
        # The medication list could not be read: "cannot tell whether already ordered".
        yield Variant(f"{name}+NRM+no-medications", _request(name, **rich, drop=("medications",)))
        yield Variant(f"{name}+as-high+no-medications", _request(name, **rich, drop=("medications",)), as_high)
    # Every prophylaxis class already on order.
    for name in ("T21", "T1", "T35"):
        yield Variant(f"{name}+NRM+ordered", _request(name, **rich, medications=ALL_ORDERED))
    yield Variant("T35+as-high+ordered", _request("T35", **rich, medications=ALL_ORDERED), as_high)
    # Notes on the risk card: no planned LD start, and bendamustine (not validated).
    yield Variant("T29+no-start", _request("T29", **rich, orders=ld_orders(PATIENT, None)))
    yield Variant("T17+bendamustine", _request("T17", **rich, orders=ld_orders(PATIENT, drugs=("134547",))))


def copied(v: Variant) -> dict[str, Any]:
    return copy.deepcopy(v.request)
