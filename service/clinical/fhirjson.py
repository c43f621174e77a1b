"""Reading FHIR JSON that any client may have filled with any JSON.

The domain reads plain dicts from EHRs; where FHIR says "array of objects" a client may send an
object, a string or a number. These two readers make every such place a skip, never a crash.
"""

from __future__ import annotations

import re
from typing import Any, Literal

# A Patient reference, relative or absolute, optionally versioned ("Patient/7/_history/2"). The id is
# anything printable without a slash, white space, "?" or "#": a site's ids may break FHIR's id grammar
# (context.patientId is compared as given); anything else makes a reference unreadable.
_PATIENT_REF = re.compile(r"(?:\S*/)?Patient/([^/\s?#]+)(?:/_history/[^/\s?#]+)?")

# Whose a resource is, by its subject (R4) or patient (DSTU2): "unknown" when the field is there but
# names no readable Patient reference (a display or identifier only, a urn:uuid, a Group).
Owner = Literal["this", "other", "unknown"]


def patient_ref_id(ref: object) -> str | None:
    """The patient id a reference string names, or None (not a string, a urn:uuid, a Group, a display)."""
    found = _PATIENT_REF.fullmatch(ref) if isinstance(ref, str) else None
    # A query, a fragment or an invisible character (zero-width space, BOM) makes it unreadable: never
    # another patient's, so that such a result is untrusted instead of dropped.
    return found.group(1) if found and found.group(1).isprintable() else None


def patient_field(resource: dict[str, Any]) -> object:
    """The field that names the resource's patient: R4 ``subject``, DSTU2 ``patient``; None when neither."""
    holder = resource.get("subject")
    return resource.get("patient") if holder is None else holder


def reference_text(holder: object) -> str | None:
    """A Reference's ``reference``; a bare string where a Reference belongs is read as its reference."""
    ref = holder.get("reference") if isinstance(holder, dict) else holder
    return ref if isinstance(ref, str) else None


def owner(resource: dict[str, Any], patient_id: str) -> Owner:
    """The one reading of a resource's patient, for every rule (each decides what "unknown" means for it).
    No subject is "this": the field is optional, and the search or the hook already selected the patient."""
    subject = resource.get("subject")
    if isinstance(subject, dict) and subject.get("reference") == f"Patient/{patient_id}":
        return "this"  # the common form, as the reading below answers it, without its calls (every result)
    holder = patient_field(resource)
    if holder is None:
        return "this"
    ref = reference_text(holder)
    if ref is None:
        return "unknown"
    if ref == f"Patient/{patient_id}":
        return "this"
    found = patient_ref_id(ref)
    if found is None:
        return "unknown"
    return "this" if found == patient_id else "other"


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def dicts(value: object) -> list[dict[str, Any]]:
    """The objects of a JSON array (anything else in it, or a non-array, is skipped)."""
    return [v for v in as_list(value) if isinstance(v, dict)]
