"""`--registry FILE.csv`: `patient,infusion_date[,ld_start]` from the program's registry (§10).

A named patient's infusions (day 0 of each course) and, when given, the LD start come from the
registry instead of §9.2; `ld_start_source` is then `registry`. A row that cannot be read is a
problem with its line, never a crash.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from service.clinical.labs import parse_fhir_datetime
from service.cohort.problems import Problem

HEADER = ("patient", "infusion_date", "ld_start")


@dataclass(frozen=True)
class RegistryEntry:
    line: int
    infusion: datetime  # midnight local when only a date is given
    infusion_date_only: bool
    ld_start: datetime | None
    ld_start_date_only: bool


def read_registry(path: Path, tz: tzinfo) -> tuple[dict[str, list[RegistryEntry]], list[Problem]]:
    entries: dict[str, list[RegistryEntry]] = {}
    problems: list[Problem] = []
    name = path.name
    with path.open(newline="", encoding="utf-8-sig") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not any(cells) or (n == 1 and tuple(c.lower() for c in cells[:3]) == HEADER[: len(cells[:3])]):
                continue
            if len(cells) not in (2, 3) or not cells[0]:
                problems.append(Problem(name, n, "registry-row", "expected patient,infusion_date[,ld_start]"))
                continue
            pid = cells[0].removeprefix("Patient/")
            infusion = parse_fhir_datetime(cells[1], tz)
            if infusion is None:
                problems.append(Problem(name, n, "registry-row", "infusion_date is not an ISO date or dateTime"))
                continue
            ld = None
            if len(cells) == 3 and cells[2]:
                ld = parse_fhir_datetime(cells[2], tz)
                if ld is None:
                    problems.append(Problem(name, n, "registry-row", "ld_start is not an ISO date or dateTime"))
                    continue
            entries.setdefault(pid, []).append(
                RegistryEntry(
                    n,
                    infusion[0],
                    infusion[1],
                    ld[0] if ld else None,
                    ld[1] if ld else False,
                )
            )
    return entries, problems
