"""The CAR-HEMATOTOX risk card: what the clinician reads, and the machine-readable extension.

The extension shape is a contract with integrators (documented in docs/EXTENSION.md): fields are
only ever added, never renamed.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation

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
DISPLAY_UNITS = {"10*9/L": "×10⁹/L", "g/dL": "g/dL", "mg/dL": "mg/dL", "ng/mL": "ng/mL", "U/L": "U/L"}
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
    out = {"min": s.min, "max": s.max, "group": s.group, "ultraHigh": s.ultra_high}
    if with_open and s.could_change_group:
        out["couldChangeGroup"] = list(s.could_change_group)
    return out


def _component_json(c: Component) -> dict:
    pts = c.confirmed
    out: dict = {"analyte": c.analyte, "status": c.status, "points": {"min": pts.min, "max": pts.max}}
    r = c.used
    if r is not None:
        out["value"] = number(r.value)
        out["unit"] = r.unit
        if r.comparator:
            out["comparator"] = r.comparator
        if r.observation:
            out["observation"] = r.observation
        if len(r.derived_from) > 1:
            out["derivedFrom"] = list(r.derived_from)
        out["effective"] = fhir_datetime(r.effective)
    else:
        out["unit"] = CANONICAL[c.analyte]
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
        band = ", ultra-high band" if c.ultra_high == "yes" else ""
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
    return f"{r.comparator or ''}{number(r.value)} {unit}"


def _when(dt: datetime, tz: tzinfo, date_only: bool) -> str:
    local = dt.astimezone(tz) if not date_only else dt
    return local.strftime("%Y-%m-%d") if date_only else local.strftime("%Y-%m-%d %H:%M")


STATUS_TEXT = {
    "current": "within 3 days before LD",
    "censored": "censored result (interval)",
    "stale": "older than 3 days: not used for the confirmed score",
    "missing": "no result: counted as unknown",
    "implausible": "implausible value or unit: counted as unknown",
}


def detail(a: Assessment, tz: tzinfo, ruleset: str, nrm: NrmProfile | None = None) -> str:
    t0 = a.trigger.t0.astimezone(tz)
    window_start = (t0 - timedelta(days=3)).strftime("%Y-%m-%d")
    lines = [
        f"**CAR-HEMATOTOX: {a.confirmed.group.upper()}, score {_score_text(a.confirmed)} of 7** "
        f"(HT-high = 2 or more). Labs counted: collected {window_start} to LD start "
        f"{t0.strftime('%Y-%m-%d %H:%M')} ({REGIMENS[a.trigger.regimen]}).",
        "",
        "| Lab | Result | Collected | Points | Status |",
        "|---|---|---|---|---|",
    ]
    for x in HT_ANALYTES:
        c = a.components[x]
        when = _when(c.used.effective, tz, c.used.date_only) if c.used else "—"
        pts = c.confirmed
        p = f"{pts.min}" if pts.min == pts.max else f"{pts.min}–{pts.max} (unknown)"
        lines.append(f"| {LAB_NAMES[x]} | {_result_text(c)} | {when} | {p} | {STATUS_TEXT[c.status]} |")
    c = a.confirmed
    lines.append("")
    if c.group == "indeterminate":
        lines.append(
            f"**Not low risk until proven:** {', '.join(labs_to_order(a))} could move the score to "
            f"HT-high. Collect within 3 days before LD start (one-click order below)."
        )
    if a.provisional is not None:
        p = a.provisional
        stale = [a.components[x] for x in HT_ANALYTES if a.components[x].status == "stale"]
        dates = sorted({s.used.effective.astimezone(tz).strftime("%Y-%m-%d") for s in stale})
        lines.append(
            f"Provisional, based on labs from {', '.join(dates)}: {p.group.upper()}, score "
            f"{_score_text(p)}. Not the confirmed result: repeat "
            f"{', '.join(LAB_NAMES[s.analyte] for s in stale)} within 3 days before LD start."
        )
    if c.ultra_high == "yes":
        lines.append(
            "Score 5 or more: ultra-high band, reported in myeloma only (markedly inferior PFS/OS; "
            "prognostic, no specific management shown)."
        )
    elif c.ultra_high == "possible" and c.group == "high":
        lines.append("Ultra-high band (score 5 or more) possible with the missing labs.")
    if nrm is not None:
        lines += ["", nrm_detail(nrm, a), ""]
    notes = _notes(a)
    if notes:
        lines += ["Notes:"] + [f"- {n}" for n in notes]
    lines += ["", f"Rules {ruleset}. Decision support for the CAR-T physician, not an order."]
    text = "\n".join(lines)
    while "\n\n\n" in text:  # at most one blank line in a row (cheaper than a regex on every card)
        text = text.replace("\n\n\n", "\n\n")
    return text


def _notes(a: Assessment) -> list[str]:
    notes = []
    if "t0-assumed" in a.flags:
        notes.append("The LD order has no planned start: LD start taken as now. Labs are counted back from now.")
    if "t0-date-only" in a.flags:
        notes.append("LD start has a date but no time: labs of that whole day are counted.")
    if "not-validated-for-regimen" in a.flags:
        what = (
            "bendamustine LD"
            if a.trigger.regimen == "bendamustine"
            else (a.trigger.product or REGIMENS[a.trigger.regimen])
        )
        notes.append(
            f"Extrapolated to {what}: the score was validated with Flu/Cy before axi-cel, "
            "tisa-cel, ide-cel or cilta-cel."
        )
    if "boundary-ambiguity:ferritin" in a.flags:
        notes.append(
            "Ferritin exactly 2000 ng/mL: the source reads both 1 and 2 points here; 2 points "
            "were given (the safer reading)."
        )
    cut = [
        f.split(":")[1]
        for f in a.flags
        if f.startswith("at-cutoff:") and not (f == "at-cutoff:ferritin" and "boundary-ambiguity:ferritin" in a.flags)
    ]
    if cut:
        notes.append(
            f"Exactly at a cut-off ({', '.join(LAB_NAMES[x] for x in cut)}): scored as the "
            "myeloma validation paper words it (inclusive)."
        )
    imprecise = [f.split(":")[1] for f in a.flags if f.startswith("timing-imprecise:")]
    if imprecise:
        notes.append(
            f"Collection time not exact for {', '.join(LAB_NAMES[x] for x in imprecise)} "
            "(date only, or report time used)."
        )
    rejected = [x for x in HT_ANALYTES if a.components[x].rejected_in_window]
    if rejected:
        notes.append(
            f"Results not usable (status, unit or plausibility) were skipped for "
            f"{', '.join(LAB_NAMES[x] for x in rejected)}."
        )
    return notes


def indicator(a: Assessment) -> str:
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


def _yes_no(v: bool | None, unknown: str) -> str:
    return "yes" if v else ("no" if v is False else unknown)


def nrm_detail(p: NrmProfile, a: Assessment) -> str:
    dm = _yes_no(p.diabetes, "cannot tell (conditions not available)")
    if p.ferritin.elevated is None:
        fer = (
            "cannot tell (no ferritin within 3 days before LD)"
            if a.components["ferritin"].used is None or a.components["ferritin"].status == "stale"
            else "cannot tell (no reference range from the lab and no configured upper limit)"
        )
    else:
        fer = _yes_no(p.ferritin.elevated, "")
    lines = [
        "**NRM risk factors at LD (DESCAR-T, LBCL; associations, not a score):**",
        f"- Diabetes: {dm} — independent NRM risk factor, OR 4.4 (95% CI 1.7–11.8); infectious NRM OR 8.1",
        f"- Elevated ferritin at LD (above the lab's upper limit): {fer} — OR 2.7 (95% CI 1.0–7.4)",
    ]
    e = p.easix
    if e.easix is not None:
        above = "above" if e.above_korell else "not above"
        lines.append(
            f"- EASIX {_round(e.easix)} (log2 {e.log2:.2f}), {above} 4.67: "
            "a CRS/ICANS predictor (Korell 2022), not an infection score; informational"
        )
    else:
        lines.append("- EASIX not computed: needs LDH, creatinine and platelets within 3 days before LD")
    ctx = []
    if p.age is not None:
        ctx.append(f"age {p.age}")
    if p.ecog is not None:
        ctx.append(f"ECOG {p.ecog}")
    for x in ("hemoglobin", "platelets", "crp", "ldh"):
        c = a.components.get(x)
        if c is not None and c.status in ("current", "censored"):
            ctx.append(f"{LAB_NAMES[x]} {_result_text(c)}")
    if ctx:
        lines.append(f"- Univariate only (not independent, do not weight): {', '.join(ctx)}")
    return "\n".join(lines)
