"""Any JSON where the EHR should have put FHIR: the clinical functions never raise, they skip.

A crash here would be a 500 and a lost card; the hypothesis search puts arbitrary JSON into every
field the domain reads (orders, observations, conditions, patient).
"""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import HealthCheck, given, settings, strategies as st

from cds_hooks.models import HookRequest, order_context
from service.hooks import Clinic, cards_for, trigger_for
from tests.cases import BY_NAME, hook_request, ld_orders, prefetch_for
from tests.conftest import dev_settings

CLINIC = Clinic.from_settings(dev_settings())
# Keys the domain reads, so that generated objects reach nested places ("coding": 5, ...).
VOCAB = ["coding", "code", "system", "reference", "value", "unit", "comparator", "start", "end", "event",
         "timing", "repeat", "boundsPeriod", "text", "display", "high", "id", "resourceType"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["http://loinc.org", "http://unitsofmeasure.org", "2024-03-09", "<", "Patient/p"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(VOCAB) | st.text(max_size=6), inner, max_size=4),
    max_leaves=16,
)
OBS_FIELDS = ["status", "code", "subject", "effectiveDateTime", "effectivePeriod", "issued", "valueQuantity",
              "dataAbsentReason", "referenceRange", "interpretation", "specimen", "valueInteger", "id"]
ORDER_FIELDS = ["status", "subject", "patient", "medicationCodeableConcept", "medicationReference",
                "contained", "dosageInstruction", "resourceType", "id"]
COND_FIELDS = ["code", "clinicalStatus", "verificationStatus", "subject", "id"]


def _request(obs_field, obs_value, order_field, order_value, cond_field, cond_value):
    observations = BY_NAME["T19"].observations("p")
    pre = prefetch_for(observations, "p")  # grouped first: the bundles hold these same dicts
    for o in observations:
        o[obs_field] = obs_value
    orders = ld_orders("p")
    orders[0][order_field] = order_value
    condition = {"resourceType": "Condition", "id": "c", cond_field: cond_value}
    pre["conditions"] = {"resourceType": "Bundle", "entry": [{"resource": condition}]}
    pre["patient"]["birthDate"] = obs_value
    return hook_request("order-sign", "p", None, orders=orders, prefetch=pre)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(OBS_FIELDS), json_values, st.sampled_from(ORDER_FIELDS), json_values,
       st.sampled_from(COND_FIELDS), json_values)
def test_domain_never_raises_on_hostile_json(obs_field, obs_value, order_field, order_value, cond_field, cond_value):
    req = HookRequest.model_validate(_request(obs_field, obs_value, order_field, order_value, cond_field, cond_value))
    ctx = order_context(req)
    trigger = trigger_for(ctx, CLINIC, datetime.now(timezone.utc))
    if trigger is None:
        return
    data = {k: [e["resource"] for e in v.get("entry", [])] if v.get("resourceType") == "Bundle" else [v]
            for k, v in req.prefetch.items()}
    cards = cards_for(trigger, ctx, data, CLINIC)
    risk = cards[0].extension["hematotox-cds"]["hematotox"]
    # Garbage in one place may remove data, never invent a LOW: T19 is HIGH on every analyte.
    assert risk["confirmed"]["group"] != "low"
