"""The two CDS services: their declaration (prefetch) and hook → cards as pure functions.

Nothing here does I/O: the app resolves the prefetch and passes the data in.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from cds_hooks.models import Action, Card, Link, OrderContext, Source, Suggestion, selected_orders
from service.cards.follow_up_hook import FollowUp
from service.cards.recommendation_card import LAB_OVERRIDE_REASONS, recommendation_card
from service.cards.risk_card import (
    CALCULATOR_URL,
    LAB_NAMES,
    SOURCE_LABEL,
    SOURCE_URL,
    detail,
    extension,
    indicator,
    summary,
)
from service.cards.suggestions import Drug, missing_lab_requests
from service.clinical.assessment import Assessment, assess_patient, ruleset_version
from service.clinical.labs import LabRules
from service.clinical.nrm import ECOG_LOINC, NrmProfile, nrm_profile
from service.clinical.orders import Trigger, find_trigger
from service.clinical.prophylaxis_orders import ProphylaxisOrders, prophylaxis_orders
from service.clinical.valuesets import LOINC, PREFETCH_GROUPS, ValueSets

# Results per analyte search. The searches sort newest first, so the window's labs always come
# first; the count only decides how far back stale labs (for the provisional score) reach. The
# ANC key holds a whole differential (ANC, WBC, %, segs, bands) per draw, hence more.
_COUNTS = {"anc": 100}
_DEFAULT_COUNT = 50
HT_KEYS = ("anc", "hemoglobin", "platelets", "crp", "ferritin")
MEDICATIONS_KEY = "medications"
_MED_COUNT = 100
LAB_KEYS = tuple(PREFETCH_GROUPS)


def prefetch_templates(vs: ValueSets) -> dict[str, str]:
    out = {}
    for key, codes in vs.prefetch_codes.items():
        code_list = ",".join(f"{LOINC}|{c}" for c in codes)
        out[key] = (
            f"Observation?patient={{{{context.patientId}}}}&code={code_list}"
            f"&_sort=-date&_count={_COUNTS.get(key, _DEFAULT_COUNT)}"
        )
    out["ecog"] = f"Observation?patient={{{{context.patientId}}}}&code={LOINC}|{ECOG_LOINC}&_sort=-date&_count=5"
    out["patient"] = "Patient/{{context.patientId}}"
    out["conditions"] = "Condition?patient={{context.patientId}}&_count=200"
    # Every active order (a chart draft is no order yet), not only the prophylaxis codes: a text-only order
    # (no RxNorm) must be found too, and a code list would also grow with each site's extra codes; the drug
    # classes, intent and dates are checked here (service/clinical/prophylaxis_orders.py).
    meds = "MedicationRequest?patient={{context.patientId}}&status=active"
    out[MEDICATIONS_KEY] = f"{meds}&_count={_MED_COUNT}"
    return out


@dataclass(frozen=True)
class Clinic:
    """Everything clinical that is read from configuration once, at start-up (service/web/site.py)."""

    vs: ValueSets
    rules: LabRules
    templates: Mapping[str, str]
    ferritin_uln: Decimal | None
    disabled: frozenset[str]
    indeterminate_as_high: bool
    drugs: Mapping[str, Drug]
    monitoring: str | None
    m_easix_crp_mg_per_l: bool
    extra_diabetes_snomed: frozenset[str]
    # Where the card's "full rationale" link points (the service's own page); None: no such link.
    rationale_url: str | None = None
    follow_up: FollowUp = field(default_factory=FollowUp)  # the patient-view service (follow_up_hook.py)

    @property
    def ruleset(self) -> str:
        return ruleset_version(self.vs)


def trigger_for(ctx: OrderContext, clinic: Clinic, now: datetime) -> Trigger | None:
    """The LD trigger of this hook, or None: then the answer is `{"cards": []}`."""
    return find_trigger(selected_orders(ctx), ctx.draft_orders, ctx.patient_id, clinic.vs, now, clinic.rules.tz)


def assess(trigger: Trigger, ctx: OrderContext, data: Mapping[str, list[dict]], clinic: Clinic) -> Assessment:
    observations = [r for key in LAB_KEYS for r in data.get(key, ())]
    return assess_patient(trigger, observations, ctx.patient_id, clinic.vs, clinic.rules, ("ldh", "creatinine"))


def _optional(data: Mapping[str, list[dict]], key: str) -> list[dict] | None:
    """Optional keys the resolver could not get are absent: None = cannot tell."""
    return data.get(key, None)


def nrm_for(a: Assessment, ctx: OrderContext, data: Mapping[str, list[dict]], clinic: Clinic) -> NrmProfile:
    patient = next(iter(data.get("patient") or []), None)
    return nrm_profile(
        a.components,
        _optional(data, "conditions"),
        patient,
        list(data.get("ecog", ())),
        ctx.patient_id,
        a.trigger.t0,
        clinic.rules.tz,
        clinic.ferritin_uln,
        clinic.m_easix_crp_mg_per_l,
        clinic.extra_diabetes_snomed,
    )


def orders_for(
    trigger: Trigger, ctx: OrderContext, data: Mapping[str, list[dict]], clinic: Clinic
) -> ProphylaxisOrders:
    """The prophylaxis drugs on order: the optional `medications` key (absent = could not be read)
    and the hook's own draft orders, which count whether or not the chart could be read."""
    return prophylaxis_orders(
        _optional(data, MEDICATIONS_KEY), ctx.draft_orders, ctx.patient_id, clinic.vs, trigger.t0, clinic.rules.tz
    )


# The constant parts of the risk card, validated once (strict models are immutable, so they can be shared).
RISK_SOURCE = Source(label=SOURCE_LABEL, url=SOURCE_URL)
RISK_LINKS = [
    Link(label="CAR-HEMATOTOX online calculator (German Lymphoma Alliance)", url=CALCULATOR_URL, type="absolute")
]


def risk_card(a: Assessment, nrm: NrmProfile, ctx: OrderContext, clinic: Clinic) -> Card:
    tz = clinic.rules.tz
    suggestions = None
    if a.confirmed.could_change_group:
        requests = missing_lab_requests(
            ctx.patient_id,
            list(a.confirmed.could_change_group),
            a.trigger.t0,
            clinic.rules,
            t0_assumed=a.trigger.t0_assumed,
        )
        suggestions = [
            Suggestion(
                label=f"Order {', '.join(LAB_NAMES[x] for x in a.confirmed.could_change_group)} before LD",
                uuid=str(uuid.uuid4()),
                isRecommended=True,
                actions=[
                    Action(type="create", description=f"Draft order: {r['code']['text']}", resource=r) for r in requests
                ],
            )
        ]
    return Card(
        uuid=str(uuid.uuid4()),
        summary=summary(a, tz),
        detail=detail(a, tz, clinic.ruleset, nrm),
        indicator=indicator(a),
        source=RISK_SOURCE,
        suggestions=suggestions,
        selectionBehavior="any" if suggestions else None,
        overrideReasons=LAB_OVERRIDE_REASONS if suggestions else None,
        links=RISK_LINKS,
        extension=extension(a, clinic.ruleset, nrm),
    )


def cards_for(trigger: Trigger, ctx: OrderContext, data: Mapping[str, list[dict]], clinic: Clinic) -> list[Card]:
    """At most two cards: the risk card (score, NRM factors, missing labs) and the prophylaxis card."""
    a = assess(trigger, ctx, data, clinic)
    nrm = nrm_for(a, ctx, data, clinic)
    return [
        risk_card(a, nrm, ctx, clinic),
        recommendation_card(
            a,
            nrm,
            ctx.patient_id,
            clinic.ruleset,
            disabled=clinic.disabled,
            indeterminate_as_high=clinic.indeterminate_as_high,
            drugs=clinic.drugs,
            monitoring=clinic.monitoring,
            on_chart=orders_for(a.trigger, ctx, data, clinic),
            rationale_url=clinic.rationale_url,
        ),
    ]
