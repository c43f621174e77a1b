"""Cards for a ten-second read (issue 12): every card's detail fits 1,200 characters for every
worked case and every variant that adds text, and every emitted card passes the card validator.

The risk card keeps 150 characters spare: room for a short status note per lab (five labs), such
as "repeat: Observation/x, implausible"."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from cds_hooks.validate import card_violations
from service.web.app import create_app
from tests.card_variants import SIGN, Variant, copied, variants
from tests.conftest import dev_settings

DETAIL_MAX = 1200
RISK_DETAIL_MAX = DETAIL_MAX - 150
VARIANTS = list(variants())
_APPS: dict[str, TestClient] = {}


@pytest.fixture(scope="module")
def clients():
    yield _APPS
    for c in _APPS.values():
        c.__exit__(None, None, None)
    _APPS.clear()


def _cards(clients: dict[str, TestClient], v: Variant) -> list[dict]:
    key = json.dumps(v.settings, sort_keys=True)
    if key not in clients:
        clients[key] = TestClient(create_app(dev_settings(**v.settings)))
        clients[key].__enter__()
    r = clients[key].post(SIGN, json=copied(v))
    assert r.status_code == 200, r.text
    body = r.json()
    assert card_violations(body) == []
    assert len(body["cards"]) == 2
    return body["cards"]


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_card_budget(clients, variant: Variant):
    risk, prophylaxis = _cards(clients, variant)
    assert "hematotox" in risk["extension"]["hematotox-cds"]
    assert len(risk["detail"]) <= RISK_DETAIL_MAX, risk["detail"]
    assert len(prophylaxis["detail"]) <= DETAIL_MAX, prophylaxis["detail"]
    for card in (risk, prophylaxis):
        assert len(card["summary"]) < 140
        # Sources are numbered references at the end; each number has its link on the card.
        numbers = {int(n) for n in _refs(card["detail"])}
        assert numbers <= set(range(1, len(card.get("links", [])) + 1))


def _refs(detail: str) -> list[str]:
    import re

    return re.findall(r"\[(\d)\]", detail)


@pytest.mark.parametrize("ld", ["flu-cy", "bendamustine-date-only"])
@pytest.mark.parametrize("problem", ["subject", "implausible"])
def test_every_lab_untrusted_with_long_ids_still_fits(clients, problem: str, ld: str):
    """Review of 2cf864d, F4: a feed whose every result is untrusted (no readable patient, or an implausible
    value) and whose ids are long: the rows name times only, one line says the rest; within DETAIL_MAX (the
    150 spare of the risk card are spent on exactly these notes)."""
    from tests.card_variants import PATIENT, _request
    from tests.cases import ld_orders

    orders = ld_orders(PATIENT, "2024-03-10", drugs=("134547",)) if ld != "flu-cy" else None
    req = _request("T21", diabetes=True, ferritin_high=True, easix=True, ecog=2, orders=orders)
    for bundle in req["prefetch"].values():
        for entry in bundle.get("entry", []) if isinstance(bundle, dict) else []:
            o = entry["resource"]
            if o.get("resourceType") == "Observation":
                o["id"] += "-0123456789abcdef0123456789abcdef"
                if problem == "subject":
                    o["subject"] = {"display": "Jane Doe"}
                elif "valueQuantity" in o:
                    o["valueQuantity"]["value"] = 99999
    risk, _ = _cards(clients, Variant(f"untrusted-{problem}-{ld}", req))
    assert len(risk["detail"]) <= DETAIL_MAX, risk["detail"]
    flagged = [c for c in risk["extension"]["hematotox-cds"]["hematotox"]["components"] if "untrusted" in c]
    assert len(flagged) >= 4 and all(c["untrusted"].endswith("0123456789abcdef") for c in flagged)


def test_every_class_on_the_chart_with_long_drug_names_fits(clients):
    """Second review, N5: every class on the chart by its longest names, every NRM flag, as-high."""
    from tests.card_variants import _request, medication

    names = ["pegfilgrastim", "moxifloxacin", "isavuconazonium", "valacyclovir", "trimethoprim-sulfamethoxazole"]
    chart = [medication(f"c{i}", None, n) for i, n in enumerate(names)]
    req = _request("T35", diabetes=True, ferritin_high=True, easix=True, ecog=2, medications=chart)
    settings = {"recommendations": {"treat_indeterminate_as_high": True}}
    _, prophylaxis = _cards(clients, Variant("every-class-long-names", req, settings))
    assert len(prophylaxis["detail"]) <= DETAIL_MAX, prophylaxis["detail"]
    assert prophylaxis["detail"].count("on chart") == 5
