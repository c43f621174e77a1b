"""What was wrong with the input, with file and line: counted, listed, never silently dropped (§10).

A problem names a place (file and line, or the registry's line) and a kind; its detail never holds a
patient id, a resource id or a value, so `problems.csv` and the report can be shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal[
    "malformed-json",  # the line is not JSON
    "not-a-resource",  # JSON, but not an object with a string resourceType
    "blank-line",
    "type-mismatch",  # the resource's type differs from its file's (used by its own type)
    "no-patient-reference",  # no subject/patient reference of the form Patient/<id>
    "missing-patient",  # references a patient the export does not hold (dropped)
    "unparseable-date",  # a date the rules cannot read (the resource counts as undated)
    "unit-rejected",  # a lab unit the rules cannot convert (the result is not used)
    "infusion-without-date",  # a CAR-T administration without a readable date (§9.2: ignored)
    "unknown-file-type",  # the file's name does not start with a resource type
    "unreadable-file",  # the file could not be read (e.g. a corrupt gzip stream)
    "registry-row",  # a registry row that could not be read
    "registry-patient-missing",  # a registry row names a patient the export does not hold
]

KINDS: tuple[Kind, ...] = Kind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True, order=True)
class Problem:
    file: str  # the file's name relative to the export directory (or the registry's name)
    line: int  # 1-based; 0 for a problem of the whole file
    kind: Kind
    detail: str = ""
