"""Any JSON where the EHR should have put FHIR: the clinical functions never raise, they skip.

A crash here would be a 500 and a lost card; the hypothesis search puts arbitrary JSON into every
field the domain reads (orders, observations, conditions, patient).
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_hooks.models import HookRequest, order_context
from service.cards.order_hooks import cards_for, trigger_for
from service.web.site import clinic_from_settings
from tests.cases import BY_NAME, hook_request, ld_orders, prefetch_for
from tests.conftest import dev_settings

CLINIC = clinic_from_settings(dev_settings())
# Keys the domain reads, so that generated objects reach nested places ("coding": 5, ...).
VOCAB = [
    "coding",
    "code",
    "system",
    "reference",
    "value",
    "unit",
    "comparator",
    "start",
    "end",
    "event",
    "timing",
    "repeat",
    "boundsPeriod",
    "text",
    "display",
    "high",
    "id",
    "resourceType",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["http://loinc.org", "http://unitsofmeasure.org", "2024-03-09", "<", "Patient/p"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(VOCAB) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)
OBS_FIELDS = [
    "status",
    "code",
    "subject",
    "effectiveDateTime",
    "effectivePeriod",
    "issued",
    "valueQuantity",
    "dataAbsentReason",
    "referenceRange",
    "interpretation",
    "specimen",
    "valueInteger",
    "id",
]
ORDER_FIELDS = [
    "status",
    "subject",
    "patient",
    "medicationCodeableConcept",
    "medicationReference",
    "contained",
    "dosageInstruction",
    "resourceType",
    "id",
]
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
@given(
    st.sampled_from(OBS_FIELDS),
    json_values,
    st.sampled_from(ORDER_FIELDS),
    json_values,
    st.sampled_from(COND_FIELDS),
    json_values,
)
def test_domain_never_raises_on_hostile_json(obs_field, obs_value, order_field, order_value, cond_field, cond_value):
    req = HookRequest.model_validate(_request(obs_field, obs_value, order_field, order_value, cond_field, cond_value))
    ctx = order_context(req)
    trigger = trigger_for(ctx, CLINIC, datetime.now(UTC))
    if trigger is None:
        return
    data = {
        k: [e["resource"] for e in v.get("entry", [])] if v.get("resourceType") == "Bundle" else [v]
        for k, v in req.prefetch.items()
    }
    cards = cards_for(trigger, ctx, data, CLINIC)
    risk = cards[0].extension["hematotox-cds"]["hematotox"]
    # Garbage in one place may remove data, never invent a LOW: T19 is HIGH on every analyte.
    assert risk["confirmed"]["group"] != "low"


# ---------------------------------------------------------------- found in review, through HTTP

SIGN = "/cds-services/hematotox-order-sign"


def _sign(client, observations, orders=None):
    r = client.post(SIGN, json=hook_request("order-sign", "p", observations, orders=orders))
    assert r.status_code == 200, r.text
    return r.json()["cards"][0]["extension"]["hematotox-cds"]


def _with(case: str, analyte_id: str, **changes):
    observations = BY_NAME[case].observations("p")
    for o in observations:
        if o["id"] == f"p-{analyte_id}":
            for k, v in changes.items():
                o["valueQuantity"][k] = v
    return observations


def test_derived_anc_passes_the_plausibility_guard(client):
    """WBC 500/uL mislabelled 10*3/uL × 50 % = ANC 250 x10^9/L: implausible, not 0 points."""
    from tests.cases import obs

    observations = [o for o in BY_NAME["T4"].observations("p") if o["id"] != "p-anc"]  # Hb 9.0: 1 point
    observations += [obs("wbc", "6690-2", 500, "10*3/uL", patient="p"), obs("neut", "770-8", 50, "%", patient="p")]
    ht = _sign(client, observations)["hematotox"]
    anc = next(c for c in ht["components"] if c["analyte"] == "anc")
    assert anc["status"] in ("implausible", "missing") and ht["confirmed"]["group"] != "low"


def test_huge_number_strings_are_no_value(client):
    ext = _sign(client, _with("T1", "fer", value="1e999999999"))
    fer = next(c for c in ext["hematotox"]["components"] if c["analyte"] == "ferritin")
    assert fer["status"] == "missing" and ext["hematotox"]["confirmed"]["group"] == "indeterminate"


def test_dates_at_the_ends_of_the_calendar_are_no_date(client):
    observations = BY_NAME["T1"].observations("p")
    plt = next(o for o in observations if o["id"] == "p-plt")
    plt["effectiveDateTime"] = "0001-01-01T00:00:00+14:00"
    ht = _sign(client, observations)["hematotox"]
    # No other time to read (no `issued`): the value cannot be placed, so the platelets are missing
    # and the card names it (status "untimed", review finding 4).
    assert next(c for c in ht["components"] if c["analyte"] == "platelets")["status"] == "untimed"
    assert ht["confirmed"]["group"] == "indeterminate"
    for start in ("0001-01-02", "9999-12-31T23:59:59-14:00"):
        ext = _sign(client, BY_NAME["T1"].observations("p"), orders=ld_orders("p", start=start))
        assert "t0-assumed" in ext["hematotox"]["flags"]


def test_easix_with_a_tiny_platelet_count_does_not_crash(client):
    from tests.cases import obs

    observations = [
        *_with("T1", "plt", value=1e-24),
        obs("ldh", "2532-0", 500, "U/L", patient="p"),
        obs("crea", "2160-0", 1.0, "mg/dL", patient="p"),
    ]
    nrm = _sign(client, observations)["nrm"]
    assert nrm["easix"] > 1e20
