"""The prophylaxis and monitoring card: what applies to this patient, why, and one-click drafts."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from functools import lru_cache

from cds_hooks.models import Action, Card, Link, OverrideReason, Source, Suggestion
from service.cards.suggestions import CBC_PANEL, DEFAULT_MONITORING, Drug, medication_request, service_request
from service.clinical.assessment import Assessment
from service.clinical.nrm import NrmProfile
from service.clinical.recommendations import STRENGTH_WORDS, Recommendation, applicable

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

# The constant parts of the card, validated once (strict models are immutable, so they can be shared).
SOURCE = Source(
    label="EHA/EBMT ICAHT 2023; Rejeski 2023; Lemoine 2023 (DESCAR-T)", url="https://doi.org/10.1182/blood.2023020578"
)
LINKS = [
    Link(label="ICAHT consensus (Blood 2023)", url="https://doi.org/10.1182/blood.2023020578", type="absolute"),
    Link(
        label="DESCAR-T NRM risk factors (Blood Adv 2023)",
        url="https://doi.org/10.1182/bloodadvances.2023010624",
        type="absolute",
    ),
]


def _summary(group: str, items: list[Recommendation]) -> str:
    ids = {r.id for r in items}
    parts = []
    if "R1" in ids:
        parts.append("consider G-CSF from day +2")
    if "R6" in ids:
        parts.append("HSV/VZV prophylaxis from LD")
    if "R3" in ids:
        parts.append("intensified blood counts")
    if "R7" in ids:
        parts.append("PJP prophylaxis")
    if "R1L" in ids:
        parts.append("G-CSF probably not needed")
    head = {"high": "HT-high", "low": "HT-low", "indeterminate": "HT pending labs"}[group]
    text = f"{head}: " + ", ".join(parts) if parts else f"{head}: infection prophylaxis before CAR-T"
    if len(text) > 139:
        text = text[: text.rfind(",", 0, 139)]
    return text


def _line(r: Recommendation, extrapolated: bool) -> str:
    strength = "X" if extrapolated else r.strength
    label, url = r.source
    return f"- **{r.title}** ({r.id}). {r.text} — *{strength}: {STRENGTH_WORDS[strength]}*; source: [{label}]({url})"


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
) -> Card:
    group = a.confirmed.group
    items, pending, summary, detail = _card_text(
        group, nrm.diabetes, nrm.ferritin.elevated, frozenset(disabled), indeterminate_as_high, ruleset
    )
    extrapolated = group == "indeterminate" and indeterminate_as_high
    suggestions = _suggestions(items, patient_id, drugs, monitoring, extrapolated)
    return Card(
        uuid=str(uuid.uuid4()),
        summary=summary,
        detail=detail,
        indicator="warning" if group != "low" else "info",
        source=SOURCE,
        suggestions=suggestions or None,
        selectionBehavior="any" if suggestions else None,
        overrideReasons=OVERRIDE_REASONS,
        links=LINKS,
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


@lru_cache(maxsize=256)
def _card_text(
    group: str,
    diabetes: bool | None,
    ferritin_elevated: bool | None,
    disabled: frozenset[str],
    indeterminate_as_high: bool,
    ruleset: str,
) -> tuple[tuple[Recommendation, ...], tuple[Recommendation, ...], str, str]:
    """(items, pending items, summary, detail): they depend on the group, the two NRM flags and the
    site's settings only (no patient data), so each combination is written once per process."""
    items, pending = applicable(group, diabetes, ferritin_elevated, disabled, indeterminate_as_high)
    extrapolated = group == "indeterminate" and indeterminate_as_high
    lines = [
        f"**Infection prophylaxis and monitoring for CAR-T lymphodepletion** (CAR-HEMATOTOX "
        f"{group.upper()}{', treated as possible HT-high by local protocol' if extrapolated else ''})",
        "",
    ]
    by_audience: dict[str, list[Recommendation]] = {}
    for r in items:
        by_audience.setdefault(r.audience, []).append(r)
    headings = {
        "high": "For HT-high",
        "low": "For HT-low",
        "all": "For all CAR-T patients (any HT group)",
        "diabetes": "Diabetes (DESCAR-T)",
        "ferritin": "Elevated ferritin (DESCAR-T)",
    }
    for audience in ("high", "low", "all", "diabetes", "ferritin"):
        if audience in by_audience:
            lines.append(f"{headings[audience]}:")
            lines += [_line(r, extrapolated and audience == "high") for r in by_audience[audience]]
            lines.append("")
    if pending:
        lines.append("Pending the missing labs — apply if they confirm HT-high (not yet recommended):")
        lines += [f"- {r.title} ({r.id})" for r in pending]
        lines.append("")
    if diabetes and (group == "high" or ferritin_elevated):
        lines.append("Flags are shown side by side; no combined score exists for them (R15).")
    lines.append(f"Rule set {ruleset}: each item names its source and strength; drafts are for review.")
    return tuple(items), tuple(pending), _summary(group, items), "\n".join(lines)


def _suggestions(
    items: Sequence[Recommendation],
    patient_id: str,
    drugs: Mapping[str, Drug],
    monitoring: str | None,
    extrapolated: bool,
) -> list[Suggestion]:
    out = []
    for r in items:
        if r.order is None:
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
