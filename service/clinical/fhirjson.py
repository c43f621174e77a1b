"""Reading FHIR JSON that any client may have filled with any JSON.

The domain reads plain dicts from EHRs; where FHIR says "array of objects" a client may send an
object, a string or a number. These two readers make every such place a skip, never a crash.
"""

from __future__ import annotations

from typing import Any


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def dicts(value: object) -> list[dict[str, Any]]:
    """The objects of a JSON array (anything else in it, or a non-array, is skipped)."""
    return [v for v in as_list(value) if isinstance(v, dict)]
