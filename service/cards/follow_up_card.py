"""The follow-up card of clinical-spec §9.6: the course so far, the items F1–F5 that apply, drafts.

The extension `extension["hematotox-cds"]["course"]` is §9.8 (documented in docs/EXTENSION.md):
fields are only ever added, never renamed; optional ones are omitted, never null.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_hooks.models import Action, Card, Link, Source, Suggestion
from service.cards.recommendation_card import OVERRIDE_REASONS
from service.cards.risk_card import DISPLAY_UNITS, EXTENSION_KEY, LAB_NAMES, extension, number
from service.cards.suggestions import CBC_PANEL, Drug, medication_request, service_request
from service.clinical.assessment import Assessment
from service.clinical.course import CourseResult, Interval, LdStart
from service.clinical.follow_up import APLASTIC_RUN_DAYS, FollowUpRules, Item, ItemId, cbc_due
from service.clinical.recommendations import ASH_SAP, ICAHT, LOCAL, REJESKI

SUMMARY_MAX = 139
DETAIL_MAX = 1200

# Each item's source (a numbered reference on the card) and its short wording for the summary.
_SOURCES: dict[ItemId, tuple[str, str]] = {"F1": ICAHT, "F2": ASH_SAP, "F3": REJESKI, "F4": ICAHT, "F5": LOCAL}
_SHORT_SOURCE = {
    ICAHT: "ICAHT (Blood 2023)",
    ASH_SAP: "ASH-SAP",
    REJESKI: "Rejeski 2023",
    LOCAL: "local default (no sourced frequency)",
}
_SUMMARY_PART: dict[ItemId, tuple[str, str]] = {  # (wording, the shorter one when all do not fit)
    "F1": ("fluoroquinolone prophylaxis", "fluoroquinolone"),
    "F2": ("antifungal prophylaxis", "antifungal"),
    "F3": ("check CD34+ boost backup", "CD34+ backup"),
    "F4": ("consider G-CSF", "G-CSF"),
    "F5": ("CBC with differential due", "CBC due"),
}
# Which configured drug (settings [follow_up.drugs]) an item's one-click draft orders.
_DRUG_OF: dict[ItemId, str] = {"F1": "fluoroquinolone", "F2": "azole", "F4": "gcsf"}
_TITLES: dict[ItemId, str] = {
    "F1": "Antibacterial prophylaxis (ANC <500/µL, HT-high)",
    "F2": "Antifungal prophylaxis (prolonged severe neutropenia)",
    "F3": "CD34+ stem-cell boost awareness",
    "F4": "G-CSF from day +2 (HT-high)",
    "F5": "CBC with differential due",
}
# STRENGTH_WORDS of the prophylaxis card, shortened for the 1,200-character detail budget.
_STRENGTH_SHORT = {
    "G": "guideline",
    "P": "primary study",
    "X": "local protocol / extrapolated",
}
_FLAG_NOTES = {
    "t0-assumed": "LD start assumed: day −5 (no LD drug on days −14 to 0).",
    "infusion-without-date": "An undated CAR-T administration was ignored.",
}

SOURCE = Source(label="hematotox-cds follow-up (clinical-spec §9.6): ICAHT 2023, ASH-SAP, Rejeski 2023", url=ICAHT[1])
LINKS = {src: Link(label=src[0], url=src[1], type="absolute") for src in (ICAHT, ASH_SAP, REJESKI)}


@dataclass(frozen=True)
class FollowUpView:
    """Everything the card shows, computed elsewhere (course.py, follow_up.py, assessment.py)."""

    result: CourseResult
    ld: LdStart
    at_ld: Assessment
    items: list[Item]
    infusion_flags: tuple[str, ...]
    ruleset: str
    rules: FollowUpRules


def _span(i: Interval) -> str:
    return f"{i.min}" if i.exact else f"{i.min}–{i.max}"


def _group_text(a: Assessment) -> str:
    c = a.confirmed
    return f"{c.group.upper()} (score {_span(Interval(c.min, c.max))} of 7)"


def _latest(view: FollowUpView, analyte: str) -> str:
    latest = view.result.latest.get(analyte)
    if latest is None:
        return f"{LAB_NAMES[analyte]} —"
    r = latest.result
    value = "—" if r.value is None else f"{r.comparator or ''}{number(r.value)}"
    unit = DISPLAY_UNITS.get(r.unit, r.unit)
    return f"{LAB_NAMES[analyte]} {value} {unit} ({latest.date.isoformat()})"


def _phenotype(view: FollowUpView) -> str:
    p = view.result.phenotype
    if p.value is not None:
        return p.value if p.final else f"{p.value} so far"
    return f"undetermined ({', '.join(p.candidates)})"


def summary(view: FollowUpView) -> str:
    run = view.result.current_severe_run
    head = f"Day +{view.result.day} after CAR-T, HT-{view.at_ld.confirmed.group} at LD"
    if run.min:
        head += f", ANC <0.5 for {_span(run)} d"
    text = f"{head}: {', '.join(_SUMMARY_PART[i.id][0] for i in view.items)}"
    if len(text) > SUMMARY_MAX:  # at most 113 characters with the short wordings
        text = f"{head}: {', '.join(_SUMMARY_PART[i.id][1] for i in view.items)}"
    return text[:SUMMARY_MAX]


def _item_text(item: Item, view: FollowUpView, ref: int) -> str:
    r = view.result
    run = r.current_severe_run
    match item.id:
        case "F1":
            anc = r.latest["anc"]
            why = f"ANC <0.5 on {anc.date.isoformat()}"
            what = (
                "a fluoroquinolone (levofloxacin or ciprofloxacin) may be considered; caution if MDR-colonised "
                "or high local MDR Gram-negative rates"
            )
        case "F2":
            why = f"ANC <0.5 for {_span(run)} days in a row (≥{view.rules.prolonged_run_days})"
            what = "antifungal prophylaxis (fluconazole or posaconazole)"
        case "F3":
            why = f"run ≥{APLASTIC_RUN_DAYS} days (aplastic pattern)"
            what = "a CD34+ stem-cell boost may be needed; check backup product"
        case "F4":
            why = "no G-CSF ordered or given"
            what = "consider G-CSF (filgrastim 5 µg/kg once daily)"
        case _:
            due = cbc_due(r, view.at_ld.confirmed.group, view.rules)
            assert due is not None
            age = "no ANC since day −14" if due.age_days is None else f"latest ANC {due.age_days} days ago"
            why = f"{age} (interval {due.interval_days} d)"
            what = "CBC with differential due"
    return f"- **{item.id}** {why}: {what}. *{item.strength}* [{ref}]"


def detail(view: FollowUpView) -> str:
    r, ld = view.result, view.ld
    m = r.measures
    ld_text = ld.value[:10]  # "assumed" is said in the notes
    lines = [
        f"**Day +{r.day}** after infusion ({r.course.day0.isoformat()}) · HT at LD ({ld_text}): "
        f"**{_group_text(view.at_ld)}**",
        " · ".join(_latest(view, a) for a in ("anc", "platelets", "hemoglobin")),
        f"Days with ANC <0.5 (0–60): {_span(m.severe_neutropenia_days)} so far · current run "
        f"{_span(r.current_severe_run)} d · phenotype so far: {_phenotype(view)}",
        "",
    ]
    # Numbered references: each source once, in the order the items cite them.
    sources = list(dict.fromkeys(_SOURCES[i.id] for i in view.items))
    lines += [_item_text(i, view, sources.index(_SOURCES[i.id]) + 1) for i in view.items]
    lines.append("")
    strengths = sorted({i.strength for i in view.items})
    lines.append("Strength: " + " · ".join(f"{s} {_STRENGTH_SHORT[s]}" for s in strengths))
    lines.append("Sources: " + " · ".join(f"[{n}] {_SHORT_SOURCE[s]}" for n, s in enumerate(sources, 1)))
    flags = [*view.infusion_flags, *ld.flags]
    notes = [_FLAG_NOTES[f] for f in dict.fromkeys(flags) if f in _FLAG_NOTES]
    lines += notes
    lines.append(f"Rules {view.ruleset} · decision support, not an order.")
    text = "\n".join(lines)
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 1] + "…"


def course_extension(view: FollowUpView) -> dict[str, Any]:
    """§9.8 `course`: day 0, LD start, today's day, HT at LD (the risk card's shape), every measure."""
    r, ld = view.result, view.ld
    flags = list(dict.fromkeys([*view.infusion_flags, *ld.flags, *r.flags]))
    course: dict[str, Any] = {
        "day0": r.course.day0.isoformat(),
        "ldStart": ld.value,
        "ldStartSource": ld.source,
        "day": r.day,
        "ht": extension(view.at_ld, view.ruleset)[EXTENSION_KEY]["hematotox"],
        "measures": r.measures.as_json(),
        "phenotype": r.phenotype.as_json(),
        "currentSevereRun": r.current_severe_run.as_json(),
        "items": [i.id for i in view.items],
    }
    if flags:
        course["flags"] = flags
    return {EXTENSION_KEY: {"rulesetVersion": view.ruleset, "course": course}}


def _suggestions(view: FollowUpView, patient_id: str, drugs: Mapping[str, Drug]) -> list[Suggestion]:
    out = []
    for item in view.items:
        source = _SHORT_SOURCE[_SOURCES[item.id]]
        if item.id == "F5":
            resource = service_request(patient_id, CBC_PANEL, f"{_TITLES['F5']} (F5, {source}).")
            label = "Order CBC with differential"
        elif (drug := drugs.get(_DRUG_OF.get(item.id, ""))) is not None:
            resource = medication_request(patient_id, drug, f"{_TITLES[item.id]} ({item.id}; {source})")
            label = f"Order {drug.display}: {_TITLES[item.id]}"
        else:
            continue  # no site-configured drug: the item stays text (no shipped dose is verified)
        out.append(
            Suggestion(
                label=label[:200],
                uuid=str(uuid.uuid4()),
                isRecommended=item.strength == "G",
                actions=[
                    Action(type="create", description=f"{_TITLES[item.id]}: draft order for review", resource=resource)
                ],
            )
        )
    return out


def follow_up_card(view: FollowUpView, patient_id: str, drugs: Mapping[str, Drug]) -> Card:
    suggestions = _suggestions(view, patient_id, drugs)
    sources = dict.fromkeys(_SOURCES[i.id] for i in view.items)
    links = [LINKS[s] for s in sources if s in LINKS]
    return Card(
        uuid=str(uuid.uuid4()),
        summary=summary(view),
        detail=detail(view),
        indicator="info" if all(i.id == "F5" for i in view.items) else "warning",
        source=SOURCE,
        suggestions=suggestions or None,
        selectionBehavior="any" if suggestions else None,
        overrideReasons=OVERRIDE_REASONS,
        links=links or None,
        extension=course_extension(view),
    )
