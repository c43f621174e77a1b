"""The CAR-HEMATOTOX risk card: what the clinician reads, and the machine-readable extension.

The extension shape is a contract with integrators (documented in docs/EXTENSION.md): fields are
only ever added, never renamed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from service.cards.layout import local_time
from service.clinical.assessment import Assessment
from service.clinical.hematotox import HT_ANALYTES, Score
from service.clinical.labs import Component
from service.clinical.nrm import NrmProfile
from service.clinical.units import CANONICAL

EXTENSION_KEY = "hematotox-cds"
SOURCE_LABEL = "CAR-HEMATOTOX (Rejeski et al., J Hematol Oncol 2023)"
SOURCE_URL = "https://doi.org/10.1186/s13045-023-01465-x"
CALCULATOR_URL = "https://www.german-lymphoma-alliance.de/Scores.html"

LAB_NAMES = {
    "anc": "ANC",
    "hemoglobin": "hemoglobin",
    "platelets": "platelets",
    "crp": "CRP",
    "ferritin": "ferritin",
    "ldh": "LDH",
    "creatinine": "creatinine",
}
SHORT_NAMES = {"hemoglobin": "Hb", "platelets": "PLT"}
DISPLAY_UNITS = {"10*9/L": "×10⁹/L", "g/dL": "g/dL", "mg/dL": "mg/dL", "ng/mL": "ng/mL", "U/L": "U/L"}
SHORT_REGIMENS = {"flu-cy": "Flu/Cy", "fludarabine": "Flu", "bendamustine": "bendamustine", "cyclophosphamide": "Cy"}
REGIMENS = {
    "flu-cy": "fludarabine/cyclophosphamide",
    "fludarabine": "fludarabine",
    "bendamustine": "bendamustine",
    "cyclophosphamide": "cyclophosphamide",
    "unknown": "LD regimen not recorded",
}


def number(v: Decimal) -> int | float:
    """Canonical value for JSON: exact integers stay integers, others to 4 decimals."""
    if v == v.to_integral_value():
        return int(v)
    try:
        return float(v.quantize(Decimal("0.0001")).normalize())
    except InvalidOperation:  # beyond the decimal context (a reference limit of 1e25): no rounding needed
        return float(v)


def fhir_datetime(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def _score_text(s: Score) -> str:
    return f"{s.min}" if s.min == s.max else f"{s.min}–{s.max}"


def _group_json(s: Score, with_open: bool) -> dict:
    out: dict[str, Any] = {"min": s.min, "max": s.max, "group": s.group, "ultraHigh": s.ultra_high}
    if with_open and s.could_change_group:
        out["couldChangeGroup"] = list(s.could_change_group)
    return out


def _component_json(c: Component) -> dict:
    pts = c.confirmed
    assert pts is not None  # the card lists HT components only, and every one has points
    out: dict = {"analyte": c.analyte, "status": c.status, "points": {"min": pts.min, "max": pts.max}}
    r = c.used
    if r is not None:
        assert r.value is not None and r.effective is not None  # `used` is a usable result
        out["value"] = number(r.value)
        out["unit"] = r.unit
        if r.comparator:
            out["comparator"] = r.comparator
        if r.observation:
            out["observation"] = r.observation
        if len(r.derived_from) > 1:
            out["derivedFrom"] = list(r.derived_from)
        out["effective"] = fhir_datetime(r.effective)
        if tied := sorted({t.observation for t in c.tied if t.observation and t.observation != r.observation}):
            out["tiedWith"] = tied
    else:
        out["unit"] = CANONICAL[c.analyte]
    u = c.untrusted
    if u is not None:
        if u.observation:
            out["untrusted"] = u.observation
        if u.effective is not None:
            out["untrustedEffective"] = fhir_datetime(u.effective)
    return out


def extension(a: Assessment, ruleset: str, nrm: NrmProfile | None = None) -> dict:
    ht: dict = {"confirmed": _group_json(a.confirmed, True)}
    if a.provisional is not None:
        ht["provisional"] = _group_json(a.provisional, False)
    ht["components"] = [_component_json(a.components[x]) for x in HT_ANALYTES]
    if a.flags:
        ht["flags"] = list(a.flags)
    body = {
        "rulesetVersion": ruleset,
        "t0": fhir_datetime(a.trigger.t0),
        "hematotox": ht,
        "nrm": nrm_extension(nrm) if nrm else {},
    }
    return {EXTENSION_KEY: body}


def labs_to_order(a: Assessment) -> list[str]:
    return [LAB_NAMES[x] for x in a.confirmed.could_change_group]


def summary(a: Assessment, tz: tzinfo) -> str:
    c = a.confirmed
    if c.group == "high":
        band = ", ultra-high band (myeloma)" if c.ultra_high == "yes" else ""
        return (
            f"CAR-HEMATOTOX HIGH{band} (score {_score_text(c)} of 7): high risk of prolonged "
            f"neutropenia and severe infection"
        )
    if c.group == "low":
        return f"CAR-HEMATOTOX low (score {_score_text(c)} of 7): low risk of prolonged neutropenia"
    text = f"CAR-HEMATOTOX indeterminate (score {_score_text(c)} of 7) — order {', '.join(labs_to_order(a))}"
    if a.provisional is not None and a.provisional.group != "indeterminate":
        extra = f"; provisional {a.provisional.group.upper()} on older labs"
        if len(text) + len(extra) <= 139:
            text += extra
    return text[:139]


def _result_text(c: Component) -> str:
    r = c.used
    if r is None:
        return "—"
    unit = DISPLAY_UNITS.get(r.unit, r.unit)
    assert r.value is not None  # `used` is a usable result
    return f"{r.comparator or ''}{number(r.value)} {unit}"


# The normal state ("current": in the window) says nothing: the column is for what needs a look.
STATUS_TEXT = {
    "current": "",
    "censored": "censored",
    "stale": "older: not counted",
    "missing": "no result",
    "implausible": "implausible",
    "untimed": "no readable collection time",
}


# What a FHIR id may hold: anything else (a client's JSON) stays out of the card's markdown.
_FHIR_ID = re.compile(r"Observation/[A-Za-z0-9.-]{1,64}")


def _status_text(c: Component, tz: tzinfo, brief: bool = False) -> str:
    """The status cell; an untrusted result is named so that it can be repeated (spec §1.5 rule 3): by id and
    time, or (``brief``: several rows have one, and the card must stay short) by time only; every id is in
    the extension (`untrusted`)."""
    text = STATUS_TEXT[c.status]
    u = c.untrusted
    if u is None:
        return text
    what = [u.observation] if u.observation and _FHIR_ID.fullmatch(u.observation) and not brief else []
    if u.effective is not None:
        what.append(local_time(u.effective, tz, date_only=u.date_only))
    label = ", ".join(what) or "the untrusted result"
    if u.problem == "subject":  # in this patient's search, but its subject names no readable patient
        return f"{text}; unreadable patient (below)" if c.status == "stale" else "unreadable patient (below)"
    if c.status == "untimed":
        return f"{text}: correct {label}"
    return f"{text}; repeat {label}" if c.status == "implausible" else f"{text}; implausible {label}: repeat"


def _points(c: Component) -> str:
    pts = c.confirmed
    assert pts is not None  # every HT component has points
    return f"{pts.min}" if pts.min == pts.max else f"{pts.min}–{pts.max}"


def detail(a: Assessment, tz: tzinfo, ruleset: str, nrm: NrmProfile | None = None) -> str:
    t0 = a.trigger.t0.astimezone(tz)
    window_start = (t0 - timedelta(days=3)).strftime("%Y-%m-%d")
    c = a.confirmed
    lines = [
        f"**{c.group.upper()}, score {_score_text(c)} of 7** (high ≥2). Labs {window_start} "
        f"to LD start {local_time(a.trigger.t0, tz)} ({SHORT_REGIMENS[a.trigger.regimen]}).",
        "",
        "| Lab | Result | Collected | Points | Note |",
        "|---|---|---|---|---|",
    ]
    brief = sum(a.components[x].untrusted is not None for x in HT_ANALYTES) >= 3
    for x in HT_ANALYTES:
        comp = a.components[x]
        used = comp.used
        when = local_time(used.effective, tz, date_only=used.date_only) if used and used.effective else "—"
        lines.append(
            f"| {SHORT_NAMES.get(x, LAB_NAMES[x])} | {_result_text(comp)} | {when} | {_points(comp)} | "
            f"{_status_text(comp, tz, brief)} |".replace("|  |", "| |")
        )
    lines.append("")
    if c.group == "indeterminate":
        lines.append(
            f"**Not low risk until proven:** {', '.join(labs_to_order(a))} could make it HT-high; "
            "collect in the 3 days before LD."
        )
    if a.provisional is not None:
        p = a.provisional
        stale = [a.components[x] for x in HT_ANALYTES if a.components[x].status == "stale"]
        dates = sorted({local_time(s.used.effective, tz, date_only=True) for s in stale if s.used and s.used.effective})
        lines.append(
            f"Provisional (labs of {', '.join(dates)}): {p.group.upper()}, score {_score_text(p)}; "
            f"repeat {', '.join(LAB_NAMES[s.analyte] for s in stale)} to confirm."
        )
    if c.ultra_high == "yes":
        lines.append("Ultra-high band (5 or more; myeloma only): inferior PFS/OS, prognostic only.")
    elif c.ultra_high == "possible" and c.group == "high":
        lines.append("Ultra-high band (5 or more; myeloma only) possible with the missing labs.")
    if nrm is not None:
        lines += ["", nrm_detail(nrm, a)]
    notes = _notes(a)
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    lines += ["", f"Rules {ruleset}; support, not an order."]
    text = "\n".join(lines)
    while "\n\n\n" in text:  # at most one blank line in a row (cheaper than a regex on every card)
        text = text.replace("\n\n\n", "\n\n")
    return text


def _unattributed_note(a: Assessment) -> str | None:
    """One line, of bounded length, for the results whose subject names no readable patient (a whole feed may
    send them so): a record to correct, not a lab to repeat; their ids are in the extension (`untrusted`)."""
    n = sum((u := a.components[x].untrusted) is not None and u.problem == "subject" for x in HT_ANALYTES)
    if not n:
        return None
    what = "1 result names" if n == 1 else f"{n} results name"
    return f"{what} no readable patient: not scored; the record needs correcting (ids in the extension)."


def _notes(a: Assessment) -> list[str]:
    notes = []
    if (unattributed := _unattributed_note(a)) is not None:
        notes.append(unattributed)
    if "t0-assumed" in a.flags:
        notes.append("No planned start on the LD order: LD start taken as now; labs counted back from now.")
    if "t0-date-only" in a.flags:
        notes.append("LD start has a date only: labs of that whole day count.")
    if "not-validated-for-regimen" in a.flags:
        what = (
            "bendamustine LD"
            if a.trigger.regimen == "bendamustine"
            else (a.trigger.product or REGIMENS[a.trigger.regimen])
        )
        notes.append(f"Extrapolated to {what}: validated with Flu/Cy before axi-cel, tisa-cel, ide-cel, cilta-cel.")
    if "boundary-ambiguity:ferritin" in a.flags:
        notes.append("Ferritin exactly 2000 ng/mL: the source reads 1 or 2 points; 2 given (the safer reading).")
    cut = [
        f.split(":")[1]
        for f in a.flags
        if f.startswith("at-cutoff:") and not (f == "at-cutoff:ferritin" and "boundary-ambiguity:ferritin" in a.flags)
    ]
    if cut:
        notes.append(
            f"At a cut-off ({', '.join(LAB_NAMES[x] for x in cut)}): scored inclusive, as the myeloma paper words it."
        )
    imprecise = [f.split(":")[1] for f in a.flags if f.startswith("timing-imprecise:")]
    if imprecise:
        notes.append(
            f"Collection time not exact for {', '.join(LAB_NAMES[x] for x in imprecise)} (date only or report time)."
        )
    # A lab whose untrusted result has no readable patient is said by the line above, not again here.
    rejected = [
        x
        for x in HT_ANALYTES
        if a.components[x].rejected_in_window
        and not ((u := a.components[x].untrusted) is not None and u.problem == "subject")
    ]
    if rejected:
        notes.append(
            f"Unusable results (status, unit, plausibility, collection time) skipped: "
            f"{', '.join(LAB_NAMES[x] for x in rejected)}."
        )
    return notes


def indicator(a: Assessment) -> Literal["info", "warning"]:
    return "info" if a.confirmed.group == "low" else "warning"


# ---------------------------------------------------------------- NRM (DESCAR-T) on the risk card


def _round(v: Decimal | None) -> float | None:
    # float, not Decimal.quantize: an index from a tiny platelet count can exceed the decimal
    # context's precision, and the extension carries a JSON number anyway.
    return None if v is None else round(float(v), 2)


def nrm_extension(p: NrmProfile) -> dict:
    """`null` means "cannot tell" here (the documented exception to omitting empty fields)."""
    e = p.easix
    out: dict = {
        "diabetes": p.diabetes,
        "elevatedFerritin": p.ferritin.elevated,
        "easix": _round(e.easix),
        "easixLog2": None if e.log2 is None else round(e.log2, 2),
        "easixAboveKorellCutoff": e.above_korell,
        "sEasix": _round(e.s_easix),
        "mEasix": _round(e.m_easix),
        "age": p.age,
        "ecog": p.ecog,
        "ecogAtLeast2": None if p.ecog is None else p.ecog >= 2,
    }
    if p.diabetes_evidence:
        out["diabetesEvidence"] = list(p.diabetes_evidence)
    if p.ferritin.basis:
        out["ferritinUpperLimit"] = {"basis": p.ferritin.basis}
        if p.ferritin.uln is not None:
            out["ferritinUpperLimit"]["value"] = number(p.ferritin.uln)
            out["ferritinUpperLimit"]["unit"] = "ng/mL"
    return out


def nrm_detail(p: NrmProfile, a: Assessment) -> str:
    # "none recorded", not "no": an empty problem list does not prove the patient has no diabetes.
    dm = {True: "yes", False: "none recorded", None: "cannot tell (no problem list)"}[p.diabetes]
    if p.ferritin.elevated is None:
        fer = (
            "cannot tell (none in window)"
            if a.components["ferritin"].used is None or a.components["ferritin"].status == "stale"
            else "cannot tell (no limit from lab or config)"
        )
    else:
        fer = "yes" if p.ferritin.elevated else "no"
    lines = [
        "**NRM risk factors** (DESCAR-T, LBCL; not a score):",
        f"- Diabetes: {dm} · OR 4.4 (1.7–11.8); infectious NRM 8.1",
        f"- Ferritin > upper limit: {fer} · OR 2.7 (1.0–7.4)",
    ]
    e = p.easix
    if e.easix is not None:
        above = "above" if e.above_korell else "not above"
        lines.append(f"- EASIX {_round(e.easix)} (log2 {e.log2:.2f}), {above} 4.67: CRS/ICANS predictor (Korell 2022)")
    else:
        lines.append("- EASIX not computed (needs LDH, creatinine, platelets)")
    ctx = []
    if p.age is not None:
        ctx.append(f"age {p.age}")
    if p.ecog is not None:
        ctx.append(f"ECOG {p.ecog}")
    for x in ("hemoglobin", "platelets", "crp", "ldh"):
        c = a.components.get(x)
        if c is not None and c.status in ("current", "censored"):
            ctx.append(f"{SHORT_NAMES.get(x, LAB_NAMES[x])} {_result_text(c)}")
    if ctx:
        lines.append(f"- Univariate only, do not weight: {', '.join(ctx)}")
    return "\n".join(lines)
