"""The cards' "full rationale" link: GET /rationale holds every item's full text, strength and source."""

from __future__ import annotations

import itertools

from service.clinical.prophylaxis_orders import prophylaxis_orders
from service.clinical.recommendations import SHORT_SOURCE, TABLE
from service.clinical.valuesets import value_sets
from tests.card_variants import ALL_ORDERED, PATIENT, medication
from tests.cases import BY_NAME, hook_request, prefetch_for

SIGN = "/cds-services/hematotox-order-sign"


def test_rationale_page_holds_every_item_in_full(client):
    r = client.get("/rationale")  # public: no JWT, no patient data
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for item in TABLE:
        assert f'id="{item.id}"' in page
        assert item.text.replace("'", "&#x27;").replace("<", "&lt;").replace(">", "&gt;") in page
        assert item.source[1] in page
        assert item.short and item.source in SHORT_SOURCE  # every item has its compact line and reference


def test_the_prophylaxis_card_links_the_rationale_and_each_source(client):
    pre = prefetch_for(BY_NAME["T21"].observations(PATIENT), PATIENT)
    body = client.post(SIGN, json=hook_request("order-sign", PATIENT, None, prefetch=pre)).json()
    card = next(c for c in body["cards"] if "recommendations" in c["extension"]["hematotox-cds"])
    links = {x["label"]: x["url"] for x in card["links"]}
    assert links["Full rationale of every item (R1–R14)"] == "http://127.0.0.1:8080/rationale"
    assert links["[1] ICAHT 2023"] == "https://doi.org/10.1182/blood.2023020578"
    assert "Sources: [1] ICAHT 2023 · [2] Rejeski 2023 · [3] ASH-SAP · [4] DESCAR-T." in card["detail"]


def test_already_ordered_does_not_depend_on_the_order_data_arrives_in():
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    vs = value_sets()
    T0 = datetime(2024, 3, 10, 10, tzinfo=UTC)
    chart = [*ALL_ORDERED, medication("a2", "281", "acyclovir"), medication("c2", None, "ciprofloxacin")]
    answers = {
        tuple(sorted(prophylaxis_orders(list(p), [], PATIENT, vs, T0, ZoneInfo("UTC")).ordered.items()))
        for p in itertools.permutations(chart, len(chart))
    }
    assert len(answers) == 1


def test_rationale_page_shows_a_second_source_of_an_item(client):
    page = client.get("/rationale").text
    row = page[page.index('id="R11"') :].split("</tr>")[0]
    assert "timing: G" in row and "https://ash-sap.org/view-large/12050824" in row
