"""Which prophylaxis drugs the patient already has on order, by drug class (value-set
`drug_classes`: gcsf, antiviral, pjp, fluoroquinolone, azole): the hook's own draft orders, and the
chart's MedicationRequests (prefetch key `medications`).

Only a systemic order counts: acyclovir cream or ciprofloxacin eye drops do not cover HSV or
bacterial prophylaxis (value-set `local_use_forms`, read by routes.py).

The two sources weigh differently. A draft in this hook is being signed now: the card leaves out its
duplicate order button. A chart order only informs ("on chart: valacyclovir Mar 8") and the
button stays, because a medication list is often stale: it counts only when status is active, intent
is order or one of its kinds (a DSTU2 MedicationOrder is an order by its type), and it was written or starts no earlier
than 14 days before LD start — an older order may have lapsed without being ended — and none of its
periods (bounds, validity) is over before LD. In the hook, any
order not ended counts (a draft there may have no status or intent yet). When the chart could not be
read, nothing is claimed either way (`chart_read` False).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from types import MappingProxyType
from typing import Any

from service.clinical.fhirjson import as_dict, as_list, dicts
from service.clinical.labs import local_day, parse_fhir_datetime
from service.clinical.medications import belongs_to, drug_in_class, medication_concepts
from service.clinical.orders import DEAD_STATUS, ORDER_TYPES
from service.clinical.routes import route_evidence
from service.clinical.valuesets import ValueSets

# MedicationRequest.intent "order" and the kinds of it in FHIR R4's request-intent hierarchy that stand for
# an ongoing order (the placer's original, a reflex order, the pharmacy's filler order). Not instance-order
# (one occurrence, e.g. a single dose: no cover), nor proposal, plan or option (not orders).
ORDER_INTENTS = frozenset({"order", "original-order", "reflex-order", "filler-order"})
# A chart order written or starting earlier than this before LD start is not claimed as current.
CHART_LOOKBACK = timedelta(days=14)


@dataclass(frozen=True)
class Ordered:
    drug: str  # the value-set drug, e.g. "valacyclovir"
    authored: date | None  # the facility-local day it was written, else starts (_day); None: it gives neither
    in_this_hook: bool  # one of the draft orders being signed now (else on the chart)


@dataclass(frozen=True)
class ProphylaxisOrders:
    ordered: Mapping[str, Ordered]  # drug class → its most recent live order
    chart_read: bool  # False: the medication list could not be read (cannot tell)

    def of(self, classes: Iterable[str]) -> list[Ordered]:
        return [self.ordered[c] for c in classes if c in self.ordered]


def _local_date(raw: object, tz: tzinfo) -> date | None:
    parsed = parse_fhir_datetime(raw, tz) if isinstance(raw, str) else None
    return local_day(*parsed, tz) if parsed else None


def _authored(order: dict[str, Any], tz: tzinfo) -> date | None:
    for key in ("authoredOn", "dateWritten"):  # R4, DSTU2 MedicationOrder
        if day := _local_date(order.get(key), tz):
            return day
    return None


def _periods(order: dict[str, Any]) -> list[dict[str, Any]]:
    """The order's validity period and each dosage's bounds period."""
    out = [as_dict(as_dict(order.get("dispenseRequest")).get("validityPeriod"))]
    for dosage in dicts(order.get("dosageInstruction")):
        out.append(as_dict(as_dict(as_dict(dosage.get("timing")).get("repeat")).get("boundsPeriod")))
    return out


def _starts(order: dict[str, Any], tz: tzinfo) -> list[date]:
    raws = [p.get("start") for p in _periods(order)]
    for dosage in dicts(order.get("dosageInstruction")):
        raws += as_list(as_dict(dosage.get("timing")).get("event"))
    return [day for raw in raws if (day := _local_date(raw, tz))]


def _ended_before(order: dict[str, Any], ld_start: datetime, tz: tzinfo) -> bool:
    """A period of the order ends before LD start: a course that was over before LD (status left active).
    A timed end is compared with the LD instant (ended at 08:00, LD at 14:00 the same day: over); a
    date-only end with LD's facility day (it may run to the end of that day)."""
    ld_day = ld_start.astimezone(tz).date()
    for period in _periods(order):
        parsed = parse_fhir_datetime(period.get("end"), tz)
        if parsed is None:
            continue
        when, date_only = parsed
        if (when.date() < ld_day) if date_only else (when < ld_start):
            return True
    return False


def _day(order: dict[str, Any], since: date | None, tz: tzinfo) -> date | None:
    """The day the card shows for the order: when it was written, else when it starts; for a chart order
    (`since` given) the first of those that is on or after `since` (None: the order is not current)."""
    days = [d for d in [_authored(order, tz), *sorted(_starts(order, tz))] if d is not None]
    return next((d for d in days if since is None or d >= since), None)


def _live(order: object, patient_id: str, chart: tuple[date, datetime] | None, tz: tzinfo) -> bool:
    """`chart` None: the hook's drafts (anything not ended); else a chart order, current in (since, LD
    start): written or starting on or after `since`, and no period of it over before LD start."""
    if not isinstance(order, dict) or order.get("resourceType") not in ORDER_TYPES:
        return False
    if not belongs_to(order, patient_id):
        return False
    status = order.get("status")
    if chart is None:
        return not (isinstance(status, str) and status in DEAD_STATUS)
    since, ld_start = chart
    intent = order.get("intent")
    is_order = order.get("resourceType") == "MedicationOrder" or (isinstance(intent, str) and intent in ORDER_INTENTS)
    return (
        status == "active"
        and is_order
        and _day(order, since, tz) is not None
        and not _ended_before(order, ld_start, tz)
    )


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
    ld_start: datetime,
    tz: tzinfo,
) -> ProphylaxisOrders:
    """`chart` is the `medications` key's resources (None: it could not be read); `drafts` the
    hook's draft orders; `ld_start` the trigger's T0. Medications referenced by an order are looked up
    among both."""
    chart_list = None if chart is None else [r for r in chart if isinstance(r, dict)]
    draft_list = [r for r in drafts if isinstance(r, dict)]
    pool = [*(chart_list or []), *draft_list]
    ld_day = ld_start.astimezone(tz).date()
    found: dict[str, Ordered] = {}
    sources: list[tuple[list[dict[str, Any]], tuple[date, datetime] | None, bool]] = [(draft_list, None, True)]
    if chart_list is not None:
        sources.append((chart_list, (ld_day - CHART_LOOKBACK, ld_start), False))
    for orders, window, in_hook in sources:
        for order in orders:
            if not _live(order, patient_id, window, tz):
                continue
            concepts: list[dict[str, Any]] | None = None
            for drug_class in vs.drug_class_rxnorm:
                drug = drug_in_class(order, pool, vs, drug_class)
                if drug is None:
                    continue
                concepts = concepts if concepts is not None else medication_concepts(order, pool)
                if route_evidence(order, concepts, pool).says(vs.local_use):
                    break  # for local use: no class is covered by it
                hit = Ordered(drug, _day(order, window[0] if window else None, tz), in_hook)
                if _newer(hit, found.get(drug_class)):
                    found[drug_class] = hit
    return ProphylaxisOrders(MappingProxyType(found), chart_list is not None)
