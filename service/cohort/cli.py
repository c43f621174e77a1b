"""`hematotox-cds cohort`: its arguments and its run, for the service's command line (service/web/cli.py).

This module is light (argparse only) so that `hematotox-cds serve` does not load the cohort's
libraries; the analysis is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

from service.cohort.config import CohortRules

DESCRIPTION = """\
Cohort validation (clinical-spec §10): runs the service's own rules — the CAR-HEMATOTOX score and NRM
flags at LD (§1–§3), the post-infusion course (§9) — over a FHIR Bulk Data export and reproduces the
hematotoxicity analysis of Rejeski et al. 2023 (Table 2, Fig. 1A–D) for this program, beside the
paper's own figures.

EXPORT_DIR holds NDJSON files, one resource per line, any order of lines and files, plain (.ndjson) or
gzip (.ndjson.gz): Patient, Observation, Condition, MedicationAdministration, MedicationRequest,
Procedure (and Medication, when administrations name their drug by reference). A file's type is its
name's prefix (Observation*.ndjson); a resource of another type is used by its own type and reported.
Day 0 is a CAR-T product MedicationAdministration (§9.2); --registry overrides it.

OUT_DIR receives:
  courses.csv   one row per patient with a CAR-T course (the first; later ones flagged). IT CARRIES THE
                EXPORT'S PATIENT IDS (PHI) unless --pseudonymize is given: store and share it as PHI.
  summary.json  every number of the report, machine-readable (aggregates only)
  report.html   one self-contained page (aggregates only): Table 2 and Fig. 1A-D analogues by HT group
                with the paper's figures beside, exclusions and why, input problems
  problems.csv  every input problem with file and line (no ids, no values)

The site's clinical configuration (time zone, units, extra codes, ferritin ULN) is read as for `serve`
(HEMATOTOX_CONFIG and HEMATOTOX_* variables). Exit status 1 only when nothing usable was read."""


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD): {text!r}") from None


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "cohort",
        help="validate the score on a FHIR Bulk Data export (clinical-spec §10)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("export_dir", metavar="EXPORT_DIR", type=Path, help="directory of .ndjson / .ndjson.gz files")
    p.add_argument("--out", required=True, type=Path, metavar="OUT_DIR", help="where the four files are written")
    p.add_argument(
        "--registry",
        type=Path,
        metavar="FILE.csv",
        help="CSV patient,infusion_date[,ld_start] (header optional): overrides day 0 and, when given, the LD "
        "start (ld_start_source 'registry') for the patients it names",
    )
    p.add_argument(
        "--as-of",
        type=_date,
        metavar="YYYY-MM-DD",
        help="'today' for the courses (default: today in the facility time zone); days after it are unknown",
    )
    p.add_argument(
        "--pseudonymize",
        type=Path,
        metavar="KEYFILE",
        help="replace patient ids in courses.csv by HMAC-SHA256(key, id); the key file holds >= 16 bytes",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (the one-line result is still printed)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="processes (default: every core)")
    return p


def run(args: argparse.Namespace, rules: CohortRules) -> int:
    from service.cohort.pseudonym import KeyFileError, load_key
    from service.cohort.run import CohortOptions, run_cohort

    export_dir: Path = args.export_dir
    if not export_dir.is_dir():
        print(f"cohort: {export_dir} is not a directory", file=sys.stderr)
        return 2
    if args.registry is not None and not args.registry.is_file():
        print(f"cohort: --registry {args.registry} is not a file", file=sys.stderr)
        return 2
    try:
        key = load_key(args.pseudonymize) if args.pseudonymize is not None else None
    except KeyFileError as exc:
        print(f"cohort: {exc}", file=sys.stderr)
        return 2
    as_of = args.as_of or datetime.now(rules.rules.tz).date()
    opts = CohortOptions(export_dir, args.out, as_of, args.registry, key, args.quiet, max(args.workers, 0))
    result = run_cohort(opts, rules)
    print(result.message, file=sys.stdout if result.exit_status == 0 else sys.stderr)
    return result.exit_status
