"""Which prophylaxis drugs the patient already has on order: the chart's active and draft
MedicationRequests (prefetch key `medications`) and the hook's own draft orders, by drug class
(value-set `drug_classes`: gcsf, antiviral, pjp, fluoroquinolone, azole).

Saying "already ordered" takes the order button away, so only an order that is clearly live counts:
on the chart, status active or draft; in the hook, any order not ended (a draft there may have no
status yet). When the chart could not be read, nothing is claimed either way (`chart_read` False).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, tzinfo
from types import MappingProxyType
from typing import Any

from service.clinical.labs import parse_fhir_datetime
from service.clinical.medications import belongs_to, drug_in_class
from service.clinical.orders import DEAD_STATUS, ORDER_TYPES
from service.clinical.valuesets import ValueSets

CHART_STATUS = frozenset({"active", "draft"})


@dataclass(frozen=True)
class Ordered:
    drug: str  # the value-set drug, e.g. "valacyclovir"
    authored: date | None  # the facility-local date it was written; None when the order gives none
    in_this_hook: bool  # one of the draft orders being signed now


@dataclass(frozen=True)
class ProphylaxisOrders:
    ordered: Mapping[str, Ordered]  # drug class → its most recent live order
    chart_read: bool  # False: the medication list could not be read (cannot tell)

    def of(self, classes: Iterable[str]) -> list[Ordered]:
        return [self.ordered[c] for c in classes if c in self.ordered]


def _authored(order: dict[str, Any], tz: tzinfo) -> date | None:
    for key in ("authoredOn", "dateWritten"):  # R4, DSTU2 MedicationOrder
        raw = order.get(key)
        if isinstance(raw, str) and (parsed := parse_fhir_datetime(raw, tz)):
            dt, date_only = parsed
            return dt.date() if date_only else dt.astimezone(tz).date()
    return None


def _live(order: object, patient_id: str, statuses: frozenset[str] | None) -> bool:
    if not isinstance(order, dict) or order.get("resourceType") not in ORDER_TYPES:
        return False
    status = order.get("status")
    if statuses is None:  # the hook's drafts: anything not ended
        alive = not (isinstance(status, str) and status in DEAD_STATUS)
    else:
        alive = isinstance(status, str) and status in statuses
    return alive and belongs_to(order, patient_id)


def _newer(a: Ordered, b: Ordered | None) -> bool:
    """The order to report: this hook's own first, then the most recently written (undated last),
    then by drug name, so that the answer never depends on the order the resources arrive in."""
    if b is None:
        return True
    key_a = (a.in_this_hook, a.authored or date.min, a.drug)
    key_b = (b.in_this_hook, b.authored or date.min, b.drug)
    return key_a > key_b


def prophylaxis_orders(
    chart: Iterable[dict[str, Any]] | None,
    drafts: Iterable[dict[str, Any]],
    patient_id: str,
    vs: ValueSets,
    tz: tzinfo,
) -> ProphylaxisOrders:
    """`chart` is the `medications` key's resources (None: it could not be read); `drafts` the
    hook's draft orders. Medications referenced by an order are looked up among both."""
    chart_list = None if chart is None else [r for r in chart if isinstance(r, dict)]
    draft_list = [r for r in drafts if isinstance(r, dict)]
    pool = [*(chart_list or []), *draft_list]
    found: dict[str, Ordered] = {}
    sources: list[tuple[list[dict[str, Any]], frozenset[str] | None, bool]] = [(draft_list, None, True)]
    if chart_list is not None:
        sources.append((chart_list, CHART_STATUS, False))
    for orders, statuses, in_hook in sources:
        for order in orders:
            if not _live(order, patient_id, statuses):
                continue
            for drug_class in vs.drug_class_rxnorm:
                drug = drug_in_class(order, pool, vs, drug_class)
                if drug is None:
                    continue
                hit = Ordered(drug, _authored(order, tz), in_hook)
                if _newer(hit, found.get(drug_class)):
                    found[drug_class] = hit
    return ProphylaxisOrders(MappingProxyType(found), chart_list is not None)
