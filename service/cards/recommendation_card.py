"""The prophylaxis and monitoring card: what applies to this patient, why, and one-click drafts."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from functools import lru_cache

from cds_hooks.models import Action, Card, Link, OverrideReason, Source, Suggestion
from service.cards.layout import References, fit_summary, item_line, legend
from service.cards.suggestions import CBC_PANEL, DEFAULT_MONITORING, Drug, medication_request, service_request
from service.clinical.assessment import Assessment
from service.clinical.nrm import NrmProfile
from service.clinical.prophylaxis_orders import Ordered, ProphylaxisOrders
from service.clinical.recommendations import SHORT_SOURCE, Recommendation, applicable

OVERRIDE_SYSTEM = "https://hematotox-cds.org/CodeSystem/override-reason"
OVERRIDE_REASONS = [
    OverrideReason(
        system=OVERRIDE_SYSTEM, code="already-ordered", display="Already on this prophylaxis / already ordered"
    ),
    OverrideReason(system=OVERRIDE_SYSTEM, code="local-protocol", display="Local protocol differs"),
    OverrideReason(system=OVERRIDE_SYSTEM, code="contraindicated", display="Contraindicated for this patient"),
    OverrideReason(
        system=OVERRIDE_SYSTEM, code="not-applicable", display="Not applicable (e.g. not CAR-T lymphodepletion)"
    ),
]
# The risk card's one-click order is for labs: its reasons to decline are a lab order's.
LAB_OVERRIDE_REASONS = [
    OverrideReason(system=OVERRIDE_SYSTEM, code="labs-already-ordered", display="Labs already ordered or collected"),
    OverrideReason(
        system=OVERRIDE_SYSTEM, code="ld-date-changes", display="LD start will change: order the labs later"
    ),
    OverrideReason(system=OVERRIDE_SYSTEM, code="local-protocol", display="Local protocol differs"),
    OverrideReason(
        system=OVERRIDE_SYSTEM, code="not-applicable", display="Not applicable (e.g. not CAR-T lymphodepletion)"
    ),
]

# The constant parts of the card, validated once (strict models are immutable, so they can be shared).
SOURCE = Source(
    label="EHA/EBMT ICAHT 2023; Rejeski 2023; Lemoine 2023 (DESCAR-T)", url="https://doi.org/10.1182/blood.2023020578"
)


def _in_this_order_set(drug_class: str, ordered: Mapping[str, Ordered]) -> bool:
    return drug_class in ordered and ordered[drug_class].in_this_hook


def _summary(group: str, items: list[Recommendation], ordered: Mapping[str, Ordered]) -> str:
    """What this patient still needs, most important first; an item that this order set fulfils is left
    out. A chart order does not take an item out: the list may be stale (prophylaxis_orders.py). An item
    without an `ordered` line (R1L "G-CSF probably not needed") is advice about the order itself, so an
    order makes it matter more, not less: it stays."""
    ids = {r.id for r in items if not (r.ordered and any(_in_this_order_set(c, ordered) for c in r.drugs))}
    parts = [
        text
        for rid, text in (
            ("R1", "consider G-CSF from day +2"),
            ("R6", "HSV/VZV prophylaxis from LD"),
            ("R3", "intensified blood counts"),
            ("R7", "PJP prophylaxis"),
            ("R1L", "G-CSF probably not needed"),
        )
        if rid in ids
    ]
    head = {"high": "HT-high", "low": "HT-low", "indeterminate": "HT pending labs"}[group]
    return fit_summary(f"{head}: ", parts) if parts else f"{head}: infection prophylaxis before CAR-T"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _short_day(day: date | None) -> str:
    # A chart order counts only from 14 days before LD (prophylaxis_orders.py): month and day say which day
    # without the year, and "Mar 8" cannot be read as 3 August (this card's budget has no room for the year).
    return f"{_MONTHS[day.month - 1]} {day.day}" if day else "(undated)"


def _ordered_note(text: str, hits: list[Ordered]) -> str | None:
    """What is on order for an item: "in this order set: filgrastim; on chart: valacyclovir Mar 8". A drug
    the item's own text names is not named again ("on chart Mar 8")."""
    here = [o.drug for o in hits if o.in_this_hook]
    named = set(re.findall(r"[a-z][a-z-]*", text.lower()))  # whole words: "acyclovir" is not "valacyclovir"
    chart = [(o.drug, _short_day(o.authored)) for o in hits if not o.in_this_hook]
    parts = [f"in this order set: {', '.join(here)}"] if here else []
    if len(chart) == 1 and chart[0][0] in named:
        parts.append(f"on chart {chart[0][1]}")
    elif chart:
        parts.append("on chart: " + ", ".join(f"{drug} {day}" for drug, day in chart))
    return "; ".join(parts) or None


def recommendation_card(
    a: Assessment,
    nrm: NrmProfile,
    patient_id: str,
    ruleset: str,
    *,
    disabled: frozenset[str],
    indeterminate_as_high: bool,
    drugs: Mapping[str, Drug],
    monitoring: str | None,
    on_chart: ProphylaxisOrders | None = None,
    rationale_url: str | None = None,
) -> Card:
    group = a.confirmed.group
    chart = on_chart or ProphylaxisOrders({}, chart_read=False)
    ordered = tuple(sorted(chart.ordered.items()))
    items, pending, summary, detail, refs = _card_text(
        group,
        nrm.diabetes,
        nrm.ferritin.elevated,
        frozenset(disabled),
        indeterminate_as_high,
        ruleset,
        ordered,
        chart.chart_read,
    )
    extrapolated = group == "indeterminate" and indeterminate_as_high
    suggestions = _suggestions(items, patient_id, drugs, monitoring, extrapolated, dict(ordered))
    links = [*refs]
    if rationale_url:
        links.append(Link(label="Full rationale of every item (R1–R14)", url=rationale_url, type="absolute"))
    return Card(
        uuid=str(uuid.uuid4()),
        summary=summary,
        detail=detail,
        indicator="warning" if group != "low" else "info",
        source=SOURCE,
        suggestions=suggestions or None,
        selectionBehavior="any" if suggestions else None,
        overrideReasons=OVERRIDE_REASONS,
        links=links,
        extension={
            "hematotox-cds": {
                "rulesetVersion": ruleset,
                "recommendations": [
                    {"id": r.id, "strength": "X" if extrapolated and r.audience == "high" else r.strength}
                    for r in items
                ],
                **({"pendingLabs": [r.id for r in pending]} if pending else {}),
            }
        },
    )


HEADINGS = {
    "high": "HT-high",
    "low": "HT-low",
    "all": "All patients",
    "nrm": "NRM factors (no combined score)",
}


@lru_cache(maxsize=256)
def _card_text(
    group: str,
    diabetes: bool | None,
    ferritin_elevated: bool | None,
    disabled: frozenset[str],
    indeterminate_as_high: bool,
    ruleset: str,
    ordered: tuple[tuple[str, Ordered], ...],
    chart_read: bool,
) -> tuple[tuple[Recommendation, ...], tuple[Recommendation, ...], str, str, tuple[Link, ...]]:
    """(items, pending items, summary, detail, reference links): they depend on the group, the NRM
    flags, the drugs on order and the site's settings only, so each combination is written once."""
    items, pending = applicable(group, diabetes, ferritin_elevated, disabled, indeterminate_as_high)
    on_order = dict(ordered)
    extrapolated = group == "indeterminate" and indeterminate_as_high
    refs = References()
    strengths: list[str] = []
    head = {
        "high": "HT-high",
        "low": "HT-low",
        "indeterminate": "HT indeterminate" + (" as HT-high (X)" if extrapolated else ""),
    }[group]
    lines: list[str] = []
    noted: set[str] = set()  # drug classes whose order a line already named
    sections = {"high": "high", "low": "low", "all": "all", "diabetes": "nrm", "ferritin": "nrm"}
    for section in ("high", "low", "all", "nrm"):
        chosen = [r for r in items if sections[r.audience] == section]
        if not chosen:
            continue
        # The group's own items come first, under the card's heading.
        lines.append(
            f"**Infection prophylaxis, {head}:**"
            if not lines and section in ("high", "low")
            else f"**{HEADINGS[section]}:**"
        )
        for r in chosen:
            strength = "X" if extrapolated and r.audience == "high" else r.strength
            strengths.append(strength)
            if "(X)" in r.short:
                strengths.append("X")
            n = refs.number(SHORT_SOURCE[r.source], r.source[1])
            also = [(part, s, refs.number(SHORT_SOURCE[src], src[1])) for part, s, src in r.also]
            strengths += [s for _, s, _ in r.also]
            # In this order set: the item's name is enough, the note says what. A chart order only informs (it
            # may have lapsed): the item keeps its dose, duration and conditions. A drug already named on an
            # earlier line is not named again.
            hits = [on_order[c] for c in r.drugs if c in on_order and c not in noted]
            noted.update(c for c in r.drugs if c in on_order)
            # The item is cut to its name only when this line's own note names a draft of this order set.
            text = (r.ordered or r.short) if any(o.in_this_hook for o in hits) else r.short
            note = _ordered_note(text, hits)
            lines.append(item_line(text, strength, n, note, also))
        lines.append("")
    if not lines or not lines[0].startswith("**Infection"):
        lines[:0] = [f"**Infection prophylaxis, {head}**", ""]
    if pending:
        # Each pending item with its strength and source too: what a clinician may act on ahead of the labs
        # must say how strong it is (review finding 10(b)).
        pending_parts = []
        for r in pending:
            strengths.append(r.strength)
            n = refs.number(SHORT_SOURCE[r.source], r.source[1])
            # The compact line, which keeps what §4 says must be said (R2's MDR caveat, R5 "unproven").
            pending_parts.append(f"{r.short} ({r.id} · {r.strength} [{n}])")
        lines.append("**If the labs confirm HT-high** (not yet): " + ", ".join(pending_parts) + ".")
    if not chart_read:
        lines.append("Medication list unreadable: cannot tell whether already ordered.")
    lines += [legend(strengths), refs.line(), f"Rules {ruleset}."]
    detail = "\n".join(lines)
    return tuple(items), tuple(pending), _summary(group, items, on_order), detail, tuple(refs.links())


def _suggestions(
    items: Sequence[Recommendation],
    patient_id: str,
    drugs: Mapping[str, Drug],
    monitoring: str | None,
    extrapolated: bool,
    ordered: Mapping[str, Ordered],
) -> list[Suggestion]:
    out = []
    for r in items:
        # No duplicate of a draft in this order set; a chart order keeps the button (its list may be stale).
        if r.order is None or _in_this_order_set(r.order, ordered):
            continue
        if r.order == "monitoring":
            schedule = monitoring or DEFAULT_MONITORING
            resource = service_request(patient_id, CBC_PANEL, f"{schedule}. ({r.id}, {r.source[0]})")
            label = "Order blood-count monitoring schedule (local default)"
        else:
            drug = drugs[r.order]
            resource = medication_request(patient_id, drug, f"{r.title} ({r.id}; {r.source[0]})")
            label = f"Order {drug.display}: {r.title}"
        out.append(
            Suggestion(
                label=label[:200],
                uuid=str(uuid.uuid4()),
                isRecommended=not extrapolated and r.strength == "G",
                actions=[Action(type="create", description=f"{r.title}: draft order for review", resource=resource)],
            )
        )
    return out
