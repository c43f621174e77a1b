"""clinical-spec §7 T1–T39, each as a hook request with full prefetch, through the HTTP layer."""

from __future__ import annotations

import pytest

from cds_hooks.validate import card_violations
from tests.cases import BY_NAME, CASES, Case, hook_request

SIGN = "/cds-services/hematotox-order-sign"


def risk_extension(response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert card_violations(body) == []
    cards = [c for c in body["cards"] if "hematotox" in c.get("extension", {}).get("hematotox-cds", {})]
    assert len(cards) == 1
    return cards[0]["extension"]["hematotox-cds"]


def check_case(ext: dict, case: Case) -> None:
    confirmed = ext["hematotox"]["confirmed"]
    assert (confirmed["min"], confirmed["max"]) == case.score
    assert confirmed["group"] == case.group
    assert confirmed["ultraHigh"] == case.ultra
    comps = {c["analyte"]: c for c in ext["hematotox"]["components"]}
    assert list(comps) == ["anc", "hemoglobin", "platelets", "crp", "ferritin"]
    for analyte, (lo, hi) in case.points.items():
        assert (comps[analyte]["points"]["min"], comps[analyte]["points"]["max"]) == (lo, hi)
    for analyte, status in case.status.items():
        assert comps[analyte]["status"] == status
    if case.provisional:
        prov = ext["hematotox"]["provisional"]
        assert (prov["min"], prov["max"], prov["group"]) == case.provisional
    else:
        assert "provisional" not in ext["hematotox"]
    for flag in case.flags:
        assert flag in ext["hematotox"].get("flags", [])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_worked_case_order_sign(client, case: Case):
    patient = f"pt-{case.name}"
    ext = risk_extension(client.post(SIGN, json=hook_request("order-sign", patient, case.observations(patient))))
    check_case(ext, case)
    assert ext["t0"] == "2024-03-10T10:00:00+00:00"
    assert ext["nrm"]["diabetes"] is False  # conditions were sent, empty


@pytest.mark.parametrize("name", ["T9", "T23", "T24"])
def test_worked_case_order_select(client, name):
    case = BY_NAME[name]
    patient = f"pt-sel-{name}"
    req = hook_request("order-select", patient, case.observations(patient))
    check_case(risk_extension(client.post("/cds-services/hematotox-order-select", json=req)), case)


def test_components_carry_value_unit_observation_and_time(client):
    case = BY_NAME["T6"]  # Hb 90 g/L
    ext = risk_extension(client.post(SIGN, json=hook_request("order-sign", "pt-c", case.observations("pt-c"))))
    hb = next(c for c in ext["hematotox"]["components"] if c["analyte"] == "hemoglobin")
    assert hb == {
        "analyte": "hemoglobin",
        "status": "current",
        "points": {"min": 1, "max": 1},
        "value": 9,
        "unit": "g/dL",
        "observation": "Observation/pt-c-hb",
        "effective": "2024-03-09T10:00:00+00:00",
    }


def test_missing_component_has_no_value_observation_or_time(client):
    case = BY_NAME["T23"]
    ext = risk_extension(client.post(SIGN, json=hook_request("order-sign", "pt-m", case.observations("pt-m"))))
    fer = next(c for c in ext["hematotox"]["components"] if c["analyte"] == "ferritin")
    assert fer == {"analyte": "ferritin", "status": "missing", "points": {"min": 0, "max": 2}, "unit": "ng/mL"}
