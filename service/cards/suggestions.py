"""One-click orders that go with the recommendations: FHIR R4 MedicationRequest / ServiceRequest.

Drafts for the clinician to accept, never applied without them. Drug choices and the monitoring
schedule are site configuration; the defaults below are labelled as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.clinical.labs import LabRules, eligible_window
from service.clinical.valuesets import LOINC, RXNORM


@dataclass(frozen=True)
class Drug:
    rxnorm: str
    display: str
    dose: str


# RxNorm ingredient codes [RECALLED, UNVERIFIED: check against RxNav before go-live]; a site names
# its preferred products in [recommendations.drugs].
DEFAULT_DRUGS = {
    "gcsf": Drug(
        "68442", "filgrastim", "5 µg/kg subcutaneously once daily from day +2 after CAR T-cell infusion (ICAHT)"
    ),
    "antiviral": Drug(
        "73645",
        "valacyclovir",
        "500 mg orally twice daily from start of lymphodepletion until 1 year after infusion "
        "and/or CD4+ count >0.2 ×10⁹/L (ICAHT)",
    ),
}
DEFAULT_MONITORING = (
    "CBC with differential at least 3 times per week to day +30, then weekly to day +90 "
    "(configurable local default; no source gives a frequency)"
)

# Orderable LOINC codes per HT analyte (spec §5.1 primary codes); CBC panel 57021-8 [RECALLED].
LAB_ORDER_CODES = {
    "anc": ("751-8", "Neutrophils [#/volume] in Blood by Automated count"),
    "hemoglobin": ("718-7", "Hemoglobin [Mass/volume] in Blood"),
    "platelets": ("777-3", "Platelets [#/volume] in Blood by Automated count"),
    "crp": ("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma"),
    "ferritin": ("2276-4", "Ferritin [Mass/volume] in Serum or Plasma"),
}
CBC_PANEL = ("57021-8", "CBC W Auto Differential panel - Blood")


def medication_request(patient_id: str, drug: Drug, note: str) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": f"Patient/{patient_id}"},
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": drug.rxnorm, "display": drug.display}],
            "text": drug.display,
        },
        "dosageInstruction": [{"text": drug.dose}],
        "note": [{"text": note}],
    }


def service_request(
    patient_id: str, code: tuple[str, str], text: str, *, period: tuple[datetime, datetime | None] | None = None
) -> dict:
    sr = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "category": [
            {"coding": [{"system": "http://snomed.info/sct", "code": "108252007", "display": "Laboratory procedure"}]}
        ],
        "code": {"coding": [{"system": LOINC, "code": code[0], "display": code[1]}], "text": code[1]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "note": [{"text": text}],
    }
    if period:
        start, end = period
        occurrence = {"start": start.isoformat(timespec="seconds")}
        if end is not None:
            occurrence["end"] = end.isoformat(timespec="seconds")
        sr["occurrencePeriod"] = occurrence
    return sr


def missing_lab_requests(
    patient_id: str, analytes: list[str], t0: datetime, rules: LabRules, *, t0_assumed: bool = False
) -> list[dict]:
    """Exactly the labs that keep the HT group open, to be collected within the window the score
    counts (facility calendar days, spec §1.5 rule 2), so that a result drawn in it is used. With no
    planned LD start, T0 is the moment of signing (spec §1.5): the window's end would then be in the past
    when the lab sees the order, so it is left open — collect before lymphodepletion, whenever that is."""
    start, end = eligible_window(t0, rules)
    window = (start, None if t0_assumed else end)
    return [
        service_request(
            patient_id,
            LAB_ORDER_CODES[a],
            "For the CAR-HEMATOTOX score: collect within 3 days before lymphodepletion.",
            period=window,
        )
        for a in analytes
    ]
