"""Reading FHIR JSON that any client may have filled with any JSON.

The domain reads plain dicts from EHRs; where FHIR says "array of objects" a client may send an
object, a string or a number. These two readers make every such place a skip, never a crash.
"""

from __future__ import annotations

import re
from typing import Any

# A Patient reference, relative or absolute, optionally versioned ("Patient/7/_history/2"), with a FHIR id.
_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


def patient_ref_id(ref: object) -> str | None:
    """The patient id a reference string names, or None (not a string, a urn:uuid, a Group, a display)."""
    found = _PATIENT_REF.search(ref) if isinstance(ref, str) else None
    return found.group(1) if found else None


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def dicts(value: object) -> list[dict[str, Any]]:
    """The objects of a JSON array (anything else in it, or a non-array, is skipped)."""
    return [v for v in as_list(value) if isinstance(v, dict)]
