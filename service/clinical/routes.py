"""What an order or administration says about how its drug is given: the coded routes and dose forms,
and the words that describe the drug itself.

One reader for two questions: is an LD-drug order oral (then it is not lymphodepletion, orders.py), and is
a prophylaxis order for local use — a cream, eye drops, an inhaler — so that it does not cover a systemic
prophylaxis item (prophylaxis_orders.py). Only what describes this drug is read: the medication's names
and Medication.form, and each dosage's route and dose unit. A dosage's free text and patient instruction
never are: they talk about other drugs ("ondansetron 8 mg PO") and about the patient ("apply to the eye
if it itches") and would decide the answer on prose.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from service.clinical.fhirjson import as_dict, dicts
from service.clinical.medications import referenced_medications
from service.clinical.valuesets import RXNORM, RouteMarks


@dataclass(frozen=True)
class RouteEvidence:
    codes: frozenset[tuple[str, str]]  # (system, code) of every coding of the medication, its form and routes
    texts: tuple[str, ...]
    route_texts: frozenset[str] = frozenset()  # each dosage route's text and displays, stripped, lower case, no dots

    def says(self, marks: RouteMarks) -> bool:
        if not self.codes.isdisjoint(marks.codes):
            return True
        if marks.rxnorm and any(system == RXNORM and code in marks.rxnorm for system, code in self.codes):
            return True
        if not self.route_texts.isdisjoint(marks.route_texts):
            return True
        unless = marks.unless
        return any(marks.words.search(unless.sub(" ", t) if unless else t) for t in self.texts)


def route_evidence(
    resource: dict[str, Any], concepts: list[dict[str, Any]], resources: Iterable[dict[str, Any]]
) -> RouteEvidence:
    """``concepts`` are the medication's CodeableConcepts (medications.medication_concepts)."""
    coded = [*concepts, *(as_dict(m.get("form")) for m in referenced_medications(resource, resources))]
    texts: list[object] = []
    route_texts: set[str] = set()
    # An order's dosageInstruction (a list), a MedicationAdministration's dosage (one object).
    for dosage in [*dicts(resource.get("dosageInstruction")), *dicts([resource.get("dosage")])]:
        route = as_dict(dosage.get("route"))
        coded.append(route)
        # The route's whole text and its codings' displays ("OU", "O.U."), for the short abbreviations.
        for text in [route.get("text"), *(c.get("display") for c in dicts(route.get("coding")))]:
            if isinstance(text, str):
                route_texts.add(text.strip().lower().replace(".", ""))
        # The dose's unit: "tablet" (Epic), "{pill}" (the CDS Hooks sandbox); R4 doseAndRate, DSTU2 doseQuantity
        # and quantity.
        for dose in [
            as_dict(dosage.get("doseQuantity")),
            as_dict(dosage.get("dose")),  # MedicationAdministration.dosage.dose (R4)
            as_dict(dosage.get("quantity")),  # MedicationAdministration.dosage.quantity (DSTU2)
            *(as_dict(d.get("doseQuantity")) for d in dicts(dosage.get("doseAndRate"))),
        ]:
            texts += [dose.get("unit"), dose.get("code")]
    codes: set[tuple[str, str]] = set()
    for cc in coded:
        texts.append(cc.get("text"))
        for c in dicts(cc.get("coding")):
            system, code = c.get("system"), c.get("code")
            texts.append(c.get("display"))
            if isinstance(system, str) and isinstance(code, str):
                codes.add((system, code))
    return RouteEvidence(frozenset(codes), tuple(t for t in texts if isinstance(t, str)), frozenset(route_texts))
