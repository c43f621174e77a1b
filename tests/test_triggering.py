"""Which orders trigger the service, and real-world request shapes (cds-hooks-notes)."""

from __future__ import annotations

import copy

import pytest

from cds_hooks.validate import card_violations
from tests.cases import BY_NAME, RXNORM, T0, hook_request, ld_orders

SIGN = "/cds-services/hematotox-order-sign"
SELECT = "/cds-services/hematotox-order-select"
OBS = BY_NAME["T9"].observations("p1")  # a HIGH patient: a card is expected whenever triggered


def cards(client, url, req) -> list[dict]:
    """The risk cards of the answer (the prophylaxis card goes with each, tested elsewhere)."""
    r = client.post(url, json=req)
    assert r.status_code == 200, r.text
    body = r.json()
    assert card_violations(body) == []
    assert len(body["cards"]) in (0, 2)
    return [c for c in body["cards"] if "hematotox" in c["extension"]["hematotox-cds"]]


def med(mid: str, *, code: str | None = None, text: str | None = None, patient: str = "p1", **extra) -> dict:
    mr = {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
    }
    cc = {}
    if code:
        cc["coding"] = [{"system": RXNORM, "code": code}]
    if text:
        cc["text"] = text
    if cc:
        mr["medicationCodeableConcept"] = cc
    mr.update(extra)
    return mr


def test_flu_cy_triggers(client):
    assert len(cards(client, SIGN, hook_request("order-sign", "p1", OBS))) == 1


@pytest.mark.parametrize(
    "orders",
    [
        [med("a", code="1740863"), med("b", code="1734916")],  # SCD codes
        [med("a", text="Fludarabine phosphate 25 MG/ML"), med("b", text="Cyclophosphamide 500 MG")],  # text only
        [med("a", code="134547")],  # bendamustine alone
        [med("a", text="Bendeka 100 mg/4 mL")],  # brand name
        [med("a", code="3002"), med("b", text="Yescarta (axicabtagene ciloleucel) suspension")],  # Cy + CAR-T product
    ],
)
def test_ld_variants_trigger(client, orders):
    assert len(cards(client, SIGN, hook_request("order-sign", "p1", OBS, orders=orders))) == 1


@pytest.mark.parametrize(
    "orders",
    [
        [],
        [med("a", code="197361", text="amlodipine 5 MG")],
        [med("a", code="3002")],  # cyclophosphamide alone: other indications
        [med("a", code="24698", patient="someone-else")],  # not this patient's order
        [med("a", code="24698", status="entered-in-error")],
        [med("a")],  # sandbox: no medication picked yet
    ],
)
def test_non_ld_orders_give_no_cards(client, orders):
    assert cards(client, SIGN, hook_request("order-sign", "p1", OBS, orders=orders)) == []


def test_order_select_considers_only_selected_orders(client):
    orders = [*ld_orders("p1"), med("x", text="amlodipine")]
    assert (
        cards(
            client, SELECT, hook_request("order-select", "p1", OBS, orders=orders, selections=["MedicationRequest/x"])
        )
        == []
    )
    assert (
        len(
            cards(
                client,
                SELECT,
                hook_request("order-select", "p1", OBS, orders=orders, selections=["MedicationRequest/ld1"]),
            )
        )
        == 1
    )


def test_sandbox_shaped_request(client):
    """Bundle without type, no intent, category as an object, unknown keys and extensions."""
    req = hook_request("order-select", "p1", OBS)
    bundle = req["context"]["draftOrders"]
    del bundle["type"]
    for e in bundle["entry"]:
        r = e["resource"]
        r.pop("intent")
        r["category"] = {"coding": [{"code": "inpatient"}]}
        r["extension"] = [{"url": "http://example.org/x", "valueString": "y"}]
    req["extension"] = {"com.example.vendor": {"anything": True}}
    req["someFutureKey"] = [1, 2]
    req["context"]["encounterId"] = "enc-1"
    assert len(cards(client, SELECT, req)) == 1


def test_dstu2_medication_order(client):
    orders = ld_orders("p1")
    for o in orders:
        o["resourceType"] = "MedicationOrder"
        o["patient"] = o.pop("subject")
    assert len(cards(client, SIGN, hook_request("order-sign", "p1", OBS, orders=orders))) == 1


def test_contained_medication_reference(client):
    order = med(
        "a",
        medicationReference={"reference": "#m1"},
        contained=[
            {"resourceType": "Medication", "id": "m1", "code": {"coding": [{"system": RXNORM, "code": "134547"}]}}
        ],
    )
    assert len(cards(client, SIGN, hook_request("order-sign", "p1", OBS, orders=[order]))) == 1


def test_t0_is_the_earliest_planned_start(client):
    orders = ld_orders("p1")
    orders[1]["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"] = "2024-03-09T08:00:00+00:00"
    ext = cards(client, SIGN, hook_request("order-sign", "p1", OBS, orders=orders))[0]["extension"]["hematotox-cds"]
    assert ext["t0"] == "2024-03-09T08:00:00+00:00"


def test_timing_event_gives_t0(client):
    orders = ld_orders("p1", start=None)
    orders[0]["dosageInstruction"] = [{"timing": {"event": [T0]}}]
    ext = cards(client, SIGN, hook_request("order-sign", "p1", OBS, orders=orders))[0]["extension"]["hematotox-cds"]
    assert ext["t0"] == T0
    assert "t0-assumed" not in ext["hematotox"].get("flags", [])


def test_no_planned_start_assumes_now_and_says_so(client):
    orders = ld_orders("p1", start=None)
    card = cards(client, SIGN, hook_request("order-sign", "p1", OBS, orders=orders))[0]
    ext = card["extension"]["hematotox-cds"]
    assert "t0-assumed" in ext["hematotox"]["flags"]
    assert "LD start taken as now" in card["detail"]
    # Labs from 2024 are far outside the window of "now": nothing may be called low.
    assert ext["hematotox"]["confirmed"]["group"] == "indeterminate"


def test_bendamustine_carries_the_applicability_caveat(client):
    card = cards(client, SIGN, hook_request("order-sign", "p1", OBS, orders=[med("a", code="134547")]))[0]
    assert "not-validated-for-regimen" in card["extension"]["hematotox-cds"]["hematotox"]["flags"]
    assert "Extrapolated to bendamustine LD" in card["detail"]


def test_date_only_t0_counts_the_whole_day(client):
    orders = ld_orders("p1", start="2024-03-10")
    observations = copy.deepcopy(BY_NAME["T36"].observations("p1"))  # PLT 60 at 2024-03-10 12:00
    ext = cards(client, SIGN, hook_request("order-sign", "p1", observations, orders=orders))[0]["extension"]
    ht = ext["hematotox-cds"]["hematotox"]
    assert "t0-date-only" in ht["flags"]
    assert ht["confirmed"]["group"] == "high"
