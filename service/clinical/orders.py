"""Which draft orders are lymphodepletion (LD) and when LD starts (clinical-spec §5.2, §1.5).

Orders arrive as plain dicts from real EHRs: R4 MedicationRequest, DSTU2 MedicationOrder, coded
or text-only medications, contained Medications. Only the fields used here are checked.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from typing import Any, Literal

from service.clinical.fhirjson import as_dict, as_list, dicts
from service.clinical.labs import parse_fhir_datetime
from service.clinical.medications import belongs_to, match_drug, match_drugs, medication_concepts, resource_ref
from service.clinical.routes import route_evidence
from service.clinical.valuesets import DoseForms, ValueSets

ORDER_TYPES = frozenset({"MedicationRequest", "MedicationOrder"})
DEAD_STATUS = frozenset({"entered-in-error", "cancelled", "stopped", "revoked", "completed"})

# "unknown": a course whose LD drugs are not in the record (clinical-spec §9.2, LD start assumed).
Regimen = Literal["flu-cy", "fludarabine", "bendamustine", "cyclophosphamide", "unknown"]


@dataclass(frozen=True)
class LdOrder:
    ref: str
    drug: str
    start: datetime | None
    start_date_only: bool


@dataclass(frozen=True)
class Trigger:
    orders: tuple[LdOrder, ...]
    regimen: Regimen
    product: str | None
    # False when the score was not validated for this regimen or product (caveat on the card).
    validated_context: bool
    t0: datetime
    t0_assumed: bool
    t0_date_only: bool


def start_rank(start: tuple[datetime, bool], tz: tzinfo) -> tuple[date, bool, datetime, str]:
    """Sort key for competing LD starts (when, date_only), one rule wherever starts compete (within an order,
    across the draft's orders, across a course's administrations or orders): the earliest local day; on it a
    timed start before a date-only one (the date-only one names the same day, the timed one says when on it);
    then the earliest instant, then its text, so that one instant in two offsets never depends on input order."""
    when, date_only = start
    return when.astimezone(tz).date(), date_only, when, when.isoformat()


def _planned_start(order: dict[str, Any], tz: tzinfo) -> tuple[datetime, bool] | None:
    starts: list[tuple[datetime, bool]] = []
    for di in dicts(order.get("dosageInstruction")):
        timing = as_dict(di.get("timing"))
        bounds = as_dict(as_dict(timing.get("repeat")).get("boundsPeriod"))
        for raw in [bounds.get("start"), *as_list(timing.get("event"))[:1]]:
            if isinstance(raw, str) and (p := parse_fhir_datetime(raw, tz)):
                starts.append(p)
    return min(starts, key=lambda s: start_rank(s, tz)) if starts else None


def planned_start(order: dict[str, Any], tz: tzinfo) -> tuple[datetime, bool] | None:
    """The earliest planned start of an order (boundsPeriod.start or the first timing event) and date_only."""
    return _planned_start(order, tz)


def ld_drug(order: dict[str, Any], patient_id: str, resources: list[dict[str, Any]], vs: ValueSets) -> str | None:
    """The first LD drug the order names (ld_drugs), or None when it is no LD order."""
    drugs = ld_drugs(order, patient_id, resources, vs)
    return drugs[0] if drugs else None


def ld_drugs(order: dict[str, Any], patient_id: str, resources: list[dict[str, Any]], vs: ValueSets) -> tuple[str, ...]:
    """Every LD drug a live, intravenous LD order names (one order may name Flu and Cy)."""
    # Membership only for strings: a client may send any JSON there, and a dict is not hashable.
    if (
        not isinstance(order, dict)
        or not isinstance(rtype := order.get("resourceType"), str)
        or rtype not in ORDER_TYPES
    ):
        return ()
    status = order.get("status")
    if (isinstance(status, str) and status in DEAD_STATUS) or not belongs_to(order, patient_id):
        return ()
    concepts = medication_concepts(order, resources)
    drugs = match_drugs(concepts, vs.ld_rxnorm, vs.ld_names)
    if not drugs or _oral_not_intravenous(order, concepts, resources, vs.ld_dose_forms):
        return ()
    return drugs


def _oral_not_intravenous(
    order: dict[str, Any], concepts: list[dict[str, Any]], resources: list[dict[str, Any]], forms: DoseForms
) -> bool:
    """An oral form of an LD drug (fludarabine tablets for CLL) is not lymphodepletion: LD agents are
    intravenous. Oral evidence is looked for by code and by word in what describes the drug (routes.py).
    Any intravenous evidence wins: a missed LD order silently drops the score, a false trigger only shows
    a card."""
    evidence = route_evidence(order, concepts, resources)
    return evidence.says(forms.oral) and not evidence.says(forms.intravenous)


def is_oral_form(resource: dict[str, Any], resources: list[dict[str, Any]], vs: ValueSets) -> bool:
    """An oral form of an LD drug (order or administration): not lymphodepletion, at order time (ld_drug) and
    when a course's LD start is dated (course.ld_start). One rule for both."""
    return _oral_not_intravenous(resource, medication_concepts(resource, resources), resources, vs.ld_dose_forms)


def cart_product(resources: list[Any], vs: ValueSets) -> str | None:
    codes, names = vs.product_rxnorm, vs.product_names
    for r in resources:
        if not isinstance(r, dict):
            continue
        concepts = medication_concepts(r, resources)
        for key in ("code", "productCodeableConcept"):
            if isinstance(r.get(key), dict):
                concepts.append(r[key])
        if hit := match_drug(concepts, codes, names):
            return hit
    return None


def regimen_of(drugs: Collection[str]) -> Regimen | None:
    """The LD regimen the drugs make (at order time and for a course's LD start), None when none is an LD
    drug. Bendamustine first: drugs (or one order's text: "bendamustine … instead of Flu/Cy") that name it
    beside Flu/Cy are not the validated regimen, and keep the caveat."""
    if "bendamustine" in drugs:
        return "bendamustine"
    if "fludarabine" in drugs:
        return "flu-cy" if "cyclophosphamide" in drugs else "fludarabine"
    return "cyclophosphamide" if "cyclophosphamide" in drugs else None


def find_trigger(
    candidates: list[dict[str, Any]],
    draft_orders: list[dict[str, Any]],
    patient_id: str,
    vs: ValueSets,
    now: datetime,
    tz: tzinfo,
) -> Trigger | None:
    """The LD trigger among ``candidates`` (selected orders, or all at order-sign), or None.

    The regimen is read from the whole draft order set: cyclophosphamide alone (it has other
    indications) triggers only next to fludarabine or a CAR-T product order.
    """
    triggering: list[LdOrder] = []
    for order in candidates:
        if (drug := ld_drug(order, patient_id, draft_orders, vs)) is None:
            continue
        start = _planned_start(order, tz)
        triggering.append(LdOrder(resource_ref(order) or "", drug, *(start if start else (None, False))))
    if not triggering:
        return None
    in_set = {d for o in [*draft_orders, *candidates] for d in ld_drugs(o, patient_id, draft_orders, vs)}
    product = cart_product(draft_orders, vs)
    regimen = regimen_of(in_set)
    if regimen is None or (regimen == "cyclophosphamide" and product is None):
        return None
    validated = regimen == "flu-cy" and (product is None or product in vs.validated_products)
    dated = [(o.start, o.start_date_only) for o in triggering if o.start is not None]
    if dated:
        t0, date_only = min(dated, key=lambda s: start_rank(s, tz))
        if date_only:
            # A date-only LD start: labs drawn that day are pre-LD in practice, so the day counts whole.
            t0 = datetime.combine(t0.astimezone(tz).date(), time.max, tz)
        return Trigger(tuple(triggering), regimen, product, validated, t0, False, date_only)
    return Trigger(tuple(triggering), regimen, product, validated, now, True, False)
