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


# --------------------------------------------------------------------------- oral forms are not LD
SNOMED = "http://snomed.info/sct"
V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
EPIC_ROUTE = "urn:oid:1.2.840.114350.1.13.0.1.7.4.798268.7025"  # a site-specific route code system
IV_CY = med("cy", code="1734916", text="cyclophosphamide Injection")


def dosed(order: dict, **dosage) -> dict:
    order["dosageInstruction"] = [{"timing": {"repeat": {"boundsPeriod": {"start": T0}}}, **dosage}]
    return order


def route(system: str | None, code: str | None, display: str | None = None, text: str | None = None) -> dict:
    coding = {k: v for k, v in {"system": system, "code": code, "display": display}.items() if v}
    return {k: v for k, v in {"coding": [coding] if coding else None, "text": text}.items() if v}


def sandbox_oral_fludarabine() -> dict:
    """What the CDS Hooks sandbox sends when its only fludarabine is picked: a 30-day prescription."""
    name = "Fludarabine phosphate 10 MG Oral Tablet"
    order = med("sb", status="draft")
    order["medicationCodeableConcept"] = {
        "text": name,
        "coding": [{"display": name, "system": RXNORM, "code": "828706"}],
    }
    order["dosageInstruction"] = [
        {
            "timing": {
                "repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "boundsPeriod": {"start": "2024-03-10"}}
            },
            "doseAndRate": [{"doseQuantity": {"value": 1, "system": "http://unitsofmeasure.org", "code": "{pill}"}}],
        }
    ]
    order["dispenseRequest"] = {"expectedSupplyDuration": {"value": 30, "unit": "days", "code": "d"}}
    return order


ORAL = {
    # by code: the medication's name says nothing of the form
    "oral tablet code, plain name": [med("a", code="828706", text="fludarabine")],
    "Oforta code": [med("a", code="877490", text="Fludarabine phosphate 10 MG [Oforta]")],
    "oral cyclophosphamide code next to a CAR-T product": [
        med("a", code="197550", text="cyclophosphamide"),
        med("b", text="Yescarta (axicabtagene ciloleucel) suspension"),
    ],
    "oral tablet code, fludarabine IV cyclophosphamide": [med("a", code="828706", text="fludarabine"), IV_CY],
    # by the medication's text
    "the sandbox's order": [sandbox_oral_fludarabine()],
    "text: tablet": [med("a", text="fludarabine 10 mg tablet")],
    "text: PO": [med("a", text="Fludarabine 10 MG PO")],
    "text: capsule": [med("a", code="3002", text="cyclophosphamide 50 mg capsule"), med("b", text="Kymriah")],
    "text: oral brand": [med("a", text="Fludara oral")],
    "coding display only": [
        med("a", medicationCodeableConcept={"coding": [{"display": "Fludarabine 10 MG Oral Tab"}]})
    ],
    # by the dosage
    "route SNOMED oral": [dosed(med("a", code="24698"), route=route(SNOMED, "26643006", "Oral route"))],
    "route v3 PO": [dosed(med("a", code="24698"), route=route(V3_ROUTE, "PO"))],
    "route site code 'Oral'": [dosed(med("a", code="24698"), route=route(EPIC_ROUTE, "15", "Oral"))],
    "route text 'by mouth'": [dosed(med("a", code="24698"), route=route(None, None, text="by mouth"))],
    "dose unit 'tablet'": [
        dosed(med("a", code="24698"), doseAndRate=[{"doseQuantity": {"value": 4, "unit": "tablet"}}])
    ],
    "contained Medication form": [
        med(
            "a",
            medicationReference={"reference": "#m1"},
            contained=[
                {
                    "resourceType": "Medication",
                    "id": "m1",
                    "code": {"coding": [{"system": RXNORM, "code": "24698"}], "text": "fludarabine"},
                    "form": {"coding": [{"system": SNOMED, "code": "385055001", "display": "Tablet"}]},
                }
            ],
        )
    ],
}


@pytest.mark.parametrize("orders", list(ORAL.values()), ids=list(ORAL))
@pytest.mark.parametrize("url", [SIGN, SELECT], ids=["order-sign", "order-select"])
def test_an_oral_form_of_an_ld_drug_is_not_lymphodepletion(client, orders, url):
    hook = "order-sign" if url == SIGN else "order-select"
    assert cards(client, url, hook_request(hook, "p1", OBS, orders=copy.deepcopy(orders))) == []


# Free text in a dosage talks about more than this drug (premedication, hydration): it never cancels the
# trigger on its own (clinical-safety review: a missed LD order silently drops the score).
FREE_TEXT = {
    "dosage text alone": [dosed(med("a", text="fludarabine"), text="Take 1 tablet by mouth daily for 5 days")],
    "patient instruction alone": [dosed(med("a", code="24698"), patientInstruction="Swallow whole with water")],
    "anti-nausea tablets in the instruction": {
        "patientInstruction": "Drink plenty of fluids; take your anti-nausea tablets as prescribed."
    },
    "oral premedication in the text": {"text": "daily x3 (days -5 to -3); ondansetron 8 mg PO 30 min before"},
    "oral hydration in the text": {"text": "Encourage oral hydration"},
}


@pytest.mark.parametrize("case", list(FREE_TEXT), ids=list(FREE_TEXT))
@pytest.mark.parametrize("url", [SIGN, SELECT], ids=["order-sign", "order-select"])
def test_free_text_about_other_drugs_never_cancels_lymphodepletion(client, case, url):
    hook = "order-sign" if url == SIGN else "order-select"
    spec = FREE_TEXT[case]
    if isinstance(spec, list):
        orders = copy.deepcopy(spec)
    else:  # both Flu/Cy orders carry the text: still Flu/Cy, with its score
        orders = ld_orders("p1")
        for o in orders:
            o["dosageInstruction"][0].update(spec)
    body = cards(client, url, hook_request(hook, "p1", OBS, orders=orders))
    assert body, case
    if not isinstance(spec, list):
        ext = next(c for c in body if "hematotox" in c.get("extension", {}).get("hematotox-cds", {}))
        # Flu/Cy: both orders kept (cyclophosphamide alone would be "fludarabine", flagged not validated)
        assert "not-validated-for-regimen" not in ext["extension"]["hematotox-cds"]["hematotox"].get("flags", [])


def test_an_oral_dstu2_medication_order_is_not_lymphodepletion(client):
    orders = ld_orders("p1")
    for o in orders:
        o["resourceType"] = "MedicationOrder"
        o["patient"] = o.pop("subject")
        o["dosageInstruction"][0]["route"] = route(SNOMED, "26643006", "Oral route")
    assert cards(client, SIGN, hook_request("order-sign", "p1", OBS, orders=orders)) == []


INTRAVENOUS = {
    "IV route, oral premedication in the text": [
        dosed(
            med("a", code="24698"),
            route=route(SNOMED, "47625008", "Intravenous route"),
            text="30 mg/m2 over 30 min; ondansetron 8 mg PO 30 min before",
        ),
        IV_CY,
    ],
    "injection, oral antiemetic in the instruction": [
        dosed(med("a", text="fludarabine phosphate injection"), patientInstruction="take your antiemetic by mouth"),
        IV_CY,
    ],
    "IVPB text": [med("a", text="fludarabine 50 mg in NS 100 mL IVPB"), IV_CY],
    "a word that only contains 'po'": [med("a", text="fludarabine 50 mg in polyolefin bag"), IV_CY],
    "v3 IV route": [dosed(med("a", code="24698"), route=route(V3_ROUTE, "IVINFUS")), IV_CY],
}


@pytest.mark.parametrize("orders", list(INTRAVENOUS.values()), ids=list(INTRAVENOUS))
def test_intravenous_ld_orders_trigger_even_when_oral_words_appear(client, orders):
    assert len(cards(client, SIGN, hook_request("order-sign", "p1", OBS, orders=copy.deepcopy(orders)))) == 1


def test_the_same_drug_without_an_oral_form_still_triggers(client):
    # The contrast for the code path: the ingredient code with the same plain name is LD.
    assert (
        len(
            cards(
                client, SIGN, hook_request("order-sign", "p1", OBS, orders=[med("a", code="24698", text="fludarabine")])
            )
        )
        == 1
    )


@pytest.mark.parametrize("url", [SIGN, SELECT], ids=["order-sign", "order-select"])
@pytest.mark.parametrize("date_only_first", [True, False], ids=["date-only listed first", "timed listed first"])
def test_a_timed_start_wins_over_a_date_only_start_on_the_same_day(client, url, date_only_first):
    """Fludarabine planned "2024-03-10", cyclophosphamide 2024-03-10T08:00Z: LD starts at 08:00, not at the
    end of the day (labs drawn after 08:00 are post-LD), whichever order is listed first."""
    orders = ld_orders("p1")
    orders[0]["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"] = "2024-03-10"
    orders[1]["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"] = "2024-03-10T08:00:00+00:00"
    if not date_only_first:
        orders.reverse()
    hook = "order-sign" if url == SIGN else "order-select"
    r = client.post(url, json=hook_request(hook, "p1", OBS, orders=orders))
    ext = next(c for c in r.json()["cards"] if "hematotox" in c.get("extension", {}).get("hematotox-cds", {}))
    hx = ext["extension"]["hematotox-cds"]
    assert hx["t0"] == "2024-03-10T08:00:00+00:00"
    assert "t0-date-only" not in hx["hematotox"].get("flags", [])
    # A date-only start alone still counts the whole day.
    orders = ld_orders("p1", start="2024-03-10")
    r = client.post(url, json=hook_request(hook, "p1", OBS, orders=orders))
    ext = next(c for c in r.json()["cards"] if "hematotox" in c.get("extension", {}).get("hematotox-cds", {}))
    assert ext["extension"]["hematotox-cds"]["t0"].startswith("2024-03-10T23:59:59")


@pytest.mark.parametrize("url", [SIGN, SELECT], ids=["order-sign", "order-select"])
def test_within_one_order_a_timed_event_wins_over_a_date_only_bound_of_its_day(client, url):
    """The same start rule inside one order as across orders (orders.start_rank): boundsPeriod.start
    "2024-03-10" and timing.event 2024-03-10T08:00Z in one order give LD start 08:00, not 23:59."""
    orders = ld_orders("p1", start="2024-03-10")
    for o in orders:
        o["dosageInstruction"][0]["timing"]["event"] = ["2024-03-10T08:00:00+00:00"]
    hook = "order-sign" if url == SIGN else "order-select"
    r = client.post(url, json=hook_request(hook, "p1", OBS, orders=orders))
    ext = next(c for c in r.json()["cards"] if "hematotox" in c.get("extension", {}).get("hematotox-cds", {}))
    assert ext["extension"]["hematotox-cds"]["t0"] == "2024-03-10T08:00:00+00:00"


@pytest.mark.parametrize("reverse", [False, True], ids=["as listed", "reversed"])
def test_one_instant_in_two_offsets_gives_one_t0_text_whatever_the_order(client, reverse):
    orders = ld_orders("p1")
    orders[0]["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"] = "2024-03-10T09:00:00+01:00"
    orders[1]["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"] = "2024-03-10T08:00:00+00:00"
    if reverse:
        orders.reverse()
    r = client.post(SIGN, json=hook_request("order-sign", "p1", OBS, orders=orders))
    ext = next(c for c in r.json()["cards"] if "hematotox" in c.get("extension", {}).get("hematotox-cds", {}))
    assert ext["extension"]["hematotox-cds"]["t0"] == "2024-03-10T08:00:00+00:00"


def test_one_order_naming_both_ld_drugs_is_flu_cy_in_every_process():
    """Review of 2438c72, F11: the drug words are read in text order, never a set's order (which changes with
    each process's hash seed); one order naming Flu and Cy is Flu/Cy. Run under eight hash seeds."""
    import json
    import os
    import subprocess
    import sys

    probe = (
        "import json\n"
        "from fastapi.testclient import TestClient\n"
        "from service.web.app import create_app\n"
        "from tests.conftest import dev_settings\n"
        "from tests.test_triggering import OBS, SIGN, med\n"
        "from tests.cases import hook_request\n"
        "order = med('a', text='fludarabine + cyclophosphamide (LD)')\n"
        "with TestClient(create_app(dev_settings())) as c:\n"
        "    body = c.post(SIGN, json=hook_request('order-sign', 'p1', OBS, orders=[order])).json()\n"
        "ext = [x['extension']['hematotox-cds'] for x in body['cards']]\n"
        "print(json.dumps([len(body['cards'])] + [e['hematotox']['flags'] for e in ext if 'hematotox' in e]))\n"
    )
    seen = set()
    for seed in range(8):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        seen.add(out.stdout.strip().splitlines()[-1])
    assert len(seen) == 1, seen
    n_cards, *flags = json.loads(seen.pop())
    assert n_cards == 2
    assert "not-validated-for-regimen" not in (flags[0] if flags else [])  # read as Flu/Cy


def test_match_drugs_names_every_drug_in_text_order():
    from service.clinical.medications import match_drugs
    from service.clinical.valuesets import value_sets

    vs = value_sets()
    concepts = [{"text": "cyclophosphamide then fludarabine"}]
    assert match_drugs(concepts, vs.ld_rxnorm, vs.ld_names) == ("cyclophosphamide", "fludarabine")


def test_bendamustine_beside_flu_cy_keeps_the_not_validated_caveat(client):
    """Second review, N7: one text naming bendamustine "instead of" Flu/Cy is not the validated regimen."""
    order = med("a", text="bendamustine 90 mg/m2 IV (instead of fludarabine/cyclophosphamide)")
    (card,) = cards(client, SIGN, hook_request("order-sign", "p1", OBS, orders=[order]))
    assert "not-validated-for-regimen" in card["extension"]["hematotox-cds"]["hematotox"]["flags"]
