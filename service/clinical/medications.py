"""Which drug a medication resource names: by RxNorm code, else by a word of its text (clinical-spec §5.2).

One matcher for every drug table (LD drugs, CAR-T products, supportive drug classes) and every
resource that names a medication (MedicationRequest, DSTU2 MedicationOrder, MedicationAdministration,
MedicationStatement), coded or text-only, with contained or bundled Medications.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from service.clinical.fhirjson import as_list, dicts, patient_ref_id
from service.clinical.valuesets import RXNORM, ValueSets


def resource_ref(resource: dict[str, Any]) -> str | None:
    rid = resource.get("id")
    rtype = resource.get("resourceType")
    return f"{rtype}/{rid}" if isinstance(rid, str) and isinstance(rtype, str) else None


def belongs_to(order: dict[str, Any], patient_id: str) -> bool:
    holder = order.get("subject") or order.get("patient")  # R4 subject, DSTU2 patient
    if holder is None:
        # Draft orders in a hook are in this patient's chart; a missing subject is sloppy, not foreign.
        return True
    return isinstance(holder, dict) and patient_ref_id(holder.get("reference")) == patient_id


def referenced_medications(order: dict[str, Any], resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Medication resources the order's medicationReference points to (contained or bundled)."""
    mref = order.get("medicationReference")
    if not isinstance(mref, dict):
        return []
    ref = mref.get("reference")
    pool = as_list(order.get("contained")) if isinstance(ref, str) and ref.startswith("#") else list(resources)
    target = ref[1:] if isinstance(ref, str) and ref.startswith("#") else ref
    return [
        med
        for med in pool
        if isinstance(med, dict)
        and med.get("resourceType") == "Medication"
        and (med.get("id") == target or resource_ref(med) == target)
    ]


def medication_concepts(order: dict[str, Any], resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The CodeableConcepts that name the order's medication, wherever the EHR put them."""
    out: list[dict[str, Any]] = []
    if isinstance(cc := order.get("medicationCodeableConcept"), dict):
        out.append(cc)
    out += [med["code"] for med in referenced_medications(order, resources) if isinstance(med.get("code"), dict)]
    mref = order.get("medicationReference")
    if isinstance(mref, dict) and isinstance(mref.get("display"), str):
        out.append({"text": mref["display"]})
    return out


_WORD = re.compile(r"[a-z][a-z\-]*")


def _words(text: str) -> set[str]:
    # Hyphenated words whole ("axi-cel", "tmp-smx") and in parts ("pegfilgrastim-jmdb": biosimilar suffixes).
    words = set(_WORD.findall(text.lower()))
    return words | {part for w in words if "-" in w for part in w.split("-") if part}


def match_drug(concepts: list[dict[str, Any]], codes: Mapping[str, str], names: Mapping[str, str]) -> str | None:
    for cc in concepts:
        for c in as_list(cc.get("coding")):
            if (
                isinstance(c, dict)
                and c.get("system") == RXNORM
                and isinstance(code := c.get("code"), str)
                and code in codes
            ):
                return codes[code]
    for cc in concepts:
        texts = [cc.get("text")] + [c.get("display") for c in dicts(cc.get("coding"))]
        for t in texts:
            if isinstance(t, str):
                hit = next((names[w] for w in _words(t) if w in names), None)
                if hit:
                    return hit
    return None


def drug_in_class(
    resource: dict[str, Any], resources: Iterable[dict[str, Any]], vs: ValueSets, drug_class: str
) -> str | None:
    """The drug of ``drug_class`` (e.g. "gcsf", "antiviral") that ``resource`` names, or None."""
    return match_drug(
        medication_concepts(resource, resources), vs.drug_class_rxnorm[drug_class], vs.drug_class_names[drug_class]
    )
