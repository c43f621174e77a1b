"""Which drug a medication resource names: by RxNorm code, else by a word of its text (clinical-spec §5.2).

One matcher for every drug table (LD drugs, CAR-T products, supportive drug classes) and every
resource that names a medication (MedicationRequest, DSTU2 MedicationOrder, MedicationAdministration,
MedicationStatement), coded or text-only, with contained or bundled Medications.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from service.clinical.fhirjson import as_list, dicts, owner
from service.clinical.valuesets import RXNORM, ValueSets


def resource_ref(resource: dict[str, Any]) -> str | None:
    rid = resource.get("id")
    rtype = resource.get("resourceType")
    return f"{rtype}/{rid}" if isinstance(rid, str) and isinstance(rtype, str) else None


def belongs_to(order: dict[str, Any], patient_id: str) -> bool:
    """Not another patient's. Orders and administrations come from this patient's hook or searches: a
    missing or unreadable subject is sloppy, not foreign (a missed LD order would silently drop the score)."""
    return owner(order, patient_id) != "other"


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


def _words(text: str) -> list[str]:
    """The words in text order (never a set's order, which changes with each process's hash seed): hyphenated
    words whole ("axi-cel", "tmp-smx"), then their parts ("pegfilgrastim-jmdb": biosimilar suffixes)."""
    out = []
    for w in _WORD.findall(text.lower()):
        out.append(w)
        if "-" in w:
            out += [part for part in w.split("-") if part]
    return out


def match_drugs(concepts: list[dict[str, Any]], codes: Mapping[str, str], names: Mapping[str, str]) -> tuple[str, ...]:
    """Every drug of the table the concepts name, in the order they name them: by RxNorm code when any code
    matches, else by the words of their texts ("fludarabine + cyclophosphamide (LD)" names both)."""
    found: dict[str, None] = {}  # an ordered set
    for cc in concepts:
        for c in as_list(cc.get("coding")):
            if (
                isinstance(c, dict)
                and c.get("system") == RXNORM
                and isinstance(code := c.get("code"), str)
                and code in codes
            ):
                found[codes[code]] = None
    if found:
        return tuple(found)
    for cc in concepts:
        texts = [cc.get("text")] + [c.get("display") for c in dicts(cc.get("coding"))]
        for t in texts:
            if isinstance(t, str):
                found.update((names[w], None) for w in _words(t) if w in names)
    return tuple(found)


def match_drug(concepts: list[dict[str, Any]], codes: Mapping[str, str], names: Mapping[str, str]) -> str | None:
    """The first drug the concepts name (match_drugs)."""
    hits = match_drugs(concepts, codes, names)
    return hits[0] if hits else None


def drug_in_class(
    resource: dict[str, Any], resources: Iterable[dict[str, Any]], vs: ValueSets, drug_class: str
) -> str | None:
    """The drug of ``drug_class`` (e.g. "gcsf", "antiviral") that ``resource`` names, or None."""
    return match_drug(
        medication_concepts(resource, resources), vs.drug_class_rxnorm[drug_class], vs.drug_class_names[drug_class]
    )
