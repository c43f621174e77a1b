"""The two CDS services: their declaration (prefetch) and hook → cards as pure functions.

Nothing here does I/O: the app resolves the prefetch and passes the data in.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Mapping
from zoneinfo import ZoneInfo

from cds_hooks.models import Card, Link, OrderContext, Source, selected_orders
from service.assessment import Assessment, assess_patient, ruleset_version
from service.labs import LabRules
from service.orders import Trigger, find_trigger
from service.risk_card import (CALCULATOR_URL, SOURCE_LABEL, SOURCE_URL, detail, extension, indicator,
                               summary)
from service.settings import Settings
from service.valuesets import LOINC, PREFETCH_GROUPS, ValueSets, value_sets

# Results per analyte search. The searches sort newest first, so the window's labs always come
# first; the count only decides how far back stale labs (for the provisional score) reach. The
# ANC key holds a whole differential (ANC, WBC, %, segs, bands) per draw, hence more.
_COUNTS = {"anc": 100}
_DEFAULT_COUNT = 50
HT_KEYS = ("anc", "hemoglobin", "platelets", "crp", "ferritin")
LAB_KEYS = tuple(PREFETCH_GROUPS)


def prefetch_templates(vs: ValueSets) -> dict[str, str]:
    out = {}
    for key, codes in vs.prefetch_codes.items():
        code_list = ",".join(f"{LOINC}|{c}" for c in codes)
        out[key] = (f"Observation?patient={{{{context.patientId}}}}&code={code_list}"
                    f"&_sort=-date&_count={_COUNTS.get(key, _DEFAULT_COUNT)}")
    out["patient"] = "Patient/{{context.patientId}}"
    out["conditions"] = "Condition?patient={{context.patientId}}&_count=200"
    return out


@dataclass(frozen=True)
class Clinic:
    """Everything clinical that is read from configuration once, at start-up."""

    vs: ValueSets
    rules: LabRules
    templates: Mapping[str, str]

    @property
    def ruleset(self) -> str:
        return ruleset_version(self.vs)

    @classmethod
    def from_settings(cls, s: Settings) -> "Clinic":
        c = s.clinical
        vs = value_sets(c.extra_loinc, c.extra_ld_rxnorm)
        rules = LabRules(
            tz=ZoneInfo(s.service.timezone),
            lookback_days=c.lookback_days,
            inclusive_boundaries=c.inclusive_boundaries,
            accept_preliminary=c.accept_preliminary,
            configured_factors={k: Decimal(str(v)) for k, v in c.unit_factors.items()},
        )
        return cls(vs, rules, prefetch_templates(vs))


def trigger_for(ctx: OrderContext, clinic: Clinic, now: datetime) -> Trigger | None:
    """The LD trigger of this hook, or None: then the answer is `{"cards": []}`."""
    return find_trigger(selected_orders(ctx), ctx.draft_orders, ctx.patient_id, clinic.vs, now,
                        clinic.rules.tz)


def assess(trigger: Trigger, ctx: OrderContext, data: Mapping[str, list[dict]], clinic: Clinic) -> Assessment:
    observations = [r for key in LAB_KEYS for r in data.get(key, ())]
    return assess_patient(trigger, observations, ctx.patient_id, clinic.vs, clinic.rules, ("ldh", "creatinine"))


def risk_card(a: Assessment, clinic: Clinic) -> Card:
    tz = clinic.rules.tz
    return Card(
        uuid=str(uuid.uuid4()),
        summary=summary(a, tz),
        detail=detail(a, tz, clinic.ruleset),
        indicator=indicator(a),
        source=Source(label=SOURCE_LABEL, url=SOURCE_URL),
        links=[Link(label="CAR-HEMATOTOX online calculator (German Lymphoma Alliance)",
                    url=CALCULATOR_URL, type="absolute")],
        extension=extension(a, clinic.ruleset),
    )


def cards_for(trigger: Trigger, ctx: OrderContext, data: Mapping[str, list[dict]], clinic: Clinic) -> list[Card]:
    return [risk_card(assess(trigger, ctx, data, clinic), clinic)]
