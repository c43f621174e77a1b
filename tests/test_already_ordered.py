"""Issue 12 items 6 and 8 through the HTTP layer: the card wording, and "already ordered" from the
`medications` prefetch key and the hook's own draft orders (with prefetch, against the real FHIR
server with no prefetch, and with the key failing)."""

from __future__ import annotations

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from cds_hooks.validate import card_violations
from service.web.app import create_app
from tests.card_variants import ALL_ORDERED, PATIENT, medication
from tests.cases import BY_NAME, hook_request, ld_orders, prefetch_for, searchset
from tests.conftest import dev_settings
from tests.fake_fhir import FakeFhir
from tests.fhir_server import FhirTestServer, load_transaction, transaction, unique_id

SIGN = "/cds-services/hematotox-order-sign"
CANNOT_TELL = "cannot tell whether already ordered"


def cards(client: TestClient, case: str = "T21", *, meds: object = "empty", **kw) -> list[dict]:
    """`meds`: "empty" (an empty searchset), "absent" (key left out), None, a resource, or a list of orders."""
    pre = prefetch_for(BY_NAME[case].observations(PATIENT), PATIENT)
    if meds == "absent":
        del pre["medications"]
    elif isinstance(meds, list):
        pre["medications"] = searchset(meds)
    elif meds != "empty":
        pre["medications"] = meds
    r = client.post(SIGN, json=hook_request("order-sign", PATIENT, None, prefetch=pre, **kw))
    assert r.status_code == 200, r.text
    assert card_violations(r.json()) == []
    return r.json()["cards"]


def prophylaxis(cs: list[dict]) -> dict:
    return next(c for c in cs if "recommendations" in c["extension"]["hematotox-cds"])


def risk(cs: list[dict]) -> dict:
    return next(c for c in cs if "hematotox" in c["extension"]["hematotox-cds"])


def ordered_drugs(card: dict) -> set[str]:
    return {
        a["resource"]["medicationCodeableConcept"]["text"]
        for s in card.get("suggestions", [])
        for a in s["actions"]
        if a["resource"]["resourceType"] == "MedicationRequest"
    }


def line(card: dict, start: str) -> str:
    return next(x for x in card["detail"].splitlines() if x.startswith(start))


# ------------------------------------------------------------------------------ item 6: wording


def test_empty_problem_list_reads_none_recorded(client):
    assert "- Diabetes: none recorded ·" in risk(cards(client))["detail"]


def test_ultra_high_band_in_the_summary_says_myeloma(client):
    assert "ultra-high band (myeloma)" in risk(cards(client, "T19"))["summary"]


def test_one_spelling_per_drug_across_text_button_and_order(client):
    body = cards(client)
    card = prophylaxis(body)
    assert ordered_drugs(card) == {"filgrastim", "valacyclovir"}
    for drug in ("filgrastim", "valacyclovir"):
        assert drug in card["detail"]
        assert any(drug in s["label"] for s in card["suggestions"])
    text = str(body)
    for other in ("valaciclovir", "aciclovir", "TMP-SMX", "co-trimoxazole"):
        assert other not in text


def test_lab_order_override_reasons_fit_a_lab_order(client):
    card = risk(cards(client, "T23"))
    displays = [o["display"] for o in card["overrideReasons"]]
    assert "Labs already ordered or collected" in displays
    assert not any("prophylaxis" in d for d in displays)


def test_times_carry_their_zone():
    settings = dev_settings(service={"development_mode": True, "timezone": "Europe/Berlin"})
    with TestClient(create_app(settings)) as c:
        detail = risk(cards(c))["detail"]
    assert "LD start 2024-03-10 11:00 CET" in detail  # T0 10:00 UTC
    assert "| 2024-03-09 11:00 CET |" in detail


# ------------------------------------------------------------------------------ item 8: with prefetch


def test_coded_order_on_the_chart_is_already_ordered_and_not_offered_again(client):
    card = prophylaxis(cards(client, meds=[medication("v1", "73645", "valacyclovir 500 mg")]))
    assert line(card, "- HSV/VZV") == "- HSV/VZV · G [1] — already ordered: valacyclovir 2024-03-08"
    assert ordered_drugs(card) == {"filgrastim"}
    assert "HSV/VZV" not in card["summary"]
    assert CANNOT_TELL not in card["detail"]


def test_text_only_order_is_found_by_name(client):
    card = prophylaxis(cards(client, meds=[medication("v1", None, "Valtrex 1 g tablet")]))
    assert "already ordered: valacyclovir 2024-03-08" in line(card, "- HSV/VZV")
    assert "valacyclovir" not in ordered_drugs(card)


@pytest.mark.parametrize("status", ["stopped", "completed", "cancelled", "entered-in-error", "on-hold", None])
def test_only_active_or_draft_chart_orders_count(client, status):
    m = medication("v1", "73645", "valacyclovir", status=status or "active")
    if status is None:
        del m["status"]
    card = prophylaxis(cards(client, meds=[m]))
    assert "already ordered" not in card["detail"]
    assert "valacyclovir" in ordered_drugs(card)


def test_another_patients_order_does_not_count(client):
    m = {**medication("v1", "73645", "valacyclovir"), "subject": {"reference": "Patient/someone-else"}}
    assert "valacyclovir" in ordered_drugs(prophylaxis(cards(client, meds=[m])))


def test_the_hooks_own_draft_orders_count(client):
    draft = {**medication("g1", "68442", "filgrastim", status="draft", authored=None), "intent": "proposal"}
    card = prophylaxis(cards(client, orders=[*ld_orders(PATIENT), draft]))
    assert "already ordered: filgrastim (this order set)" in line(card, "- G-CSF")
    assert ordered_drugs(card) == {"valacyclovir"}


def test_every_class_on_order(client):
    card = prophylaxis(cards(client, meds=ALL_ORDERED))
    assert ordered_drugs(card) == set()
    detail = card["detail"]
    for text in (
        "filgrastim 2024-03-08",
        "levofloxacin 2024-03-08",
        "valacyclovir 2024-03-08",
        "trimethoprim-sulfamethoxazole 2024-03-08",
        "posaconazole 2024-03-09",
    ):
        assert text in detail
    # The monitoring order is no drug: still offered.
    assert [s["label"] for s in card["suggestions"]] == ["Order blood-count monitoring schedule (local default)"]


@pytest.mark.parametrize("meds", ["absent", {"resourceType": "OperationOutcome", "issue": []}])
def test_unreadable_list_cannot_tell_and_still_offers_the_order(client, meds):
    card = prophylaxis(cards(client, meds=meds))  # no fhirServer to fetch it from: optional, not a 412
    assert CANNOT_TELL in card["detail"]
    assert ordered_drugs(card) == {"filgrastim", "valacyclovir"}


def test_null_means_looked_and_found_nothing(client):
    card = prophylaxis(cards(client, meds=None))
    assert CANNOT_TELL not in card["detail"] and "already ordered" not in card["detail"]
    assert ordered_drugs(card) == {"filgrastim", "valacyclovir"}


def test_a_sites_extra_drug_code_counts():
    settings = dev_settings(clinical={"extra_drug_rxnorm": {"valacyclovir": ["9999001"]}})
    m = medication("v1", "9999001", "house formulary antiviral")
    with TestClient(create_app(settings)) as c:
        card = prophylaxis(cards(c, meds=[m]))
    assert "already ordered: valacyclovir" in card["detail"]


def test_risk_extension_is_unchanged_by_the_medication_list(client):
    plain = risk(cards(client))["extension"]
    assert risk(cards(client, meds=ALL_ORDERED))["extension"] == plain
    assert risk(cards(client, meds="absent"))["extension"] == plain


# ------------------------------------------------------------------------------ no prefetch: the FHIR fallback


@pytest.mark.integration
def test_real_fhir_server_without_prefetch(fhir_server: FhirTestServer):
    patient = unique_id("ht-meds")
    observations = BY_NAME["T21"].observations(patient)
    on_chart = {
        **medication("x", None, "Valtrex 500 mg"),
        "id": f"{patient}-v",
        "subject": {"reference": f"Patient/{patient}"},
    }
    stopped = {
        **medication("y", "68442", "filgrastim", status="stopped"),
        "id": f"{patient}-g",
        "subject": {"reference": f"Patient/{patient}"},
    }
    resources = [
        {"resourceType": "Patient", "id": patient, "birthDate": "1960-01-01"},
        *observations,
        on_chart,
        stopped,
    ]
    load_transaction(fhir_server.base_url, transaction(resources))
    settings = dev_settings(fhir={"allowed_servers": [fhir_server.base_url], "deadline_seconds": 15.0})
    with TestClient(create_app(settings)) as c:
        req = hook_request(
            "order-sign", patient, None, fhir_server=fhir_server.base_url, token=fhir_server.access_token
        )
        r = c.post(SIGN, json=req)
    assert r.status_code == 200, r.text
    card = prophylaxis(r.json()["cards"])
    assert "already ordered: valacyclovir 2024-03-08" in card["detail"]
    assert ordered_drugs(card) == {"filgrastim"}  # the stopped filgrastim does not count


# ------------------------------------------------------------------------------ the key failing (respx)

BASE = "https://ehr.test/fhir"
TOKEN = "at-meds-SECRET-1"


@pytest.mark.parametrize("fault", [httpx.ConnectError("refused"), httpx.Response(500), httpx.Response(403)])
def test_medications_key_failing_is_cannot_tell_not_412(fault):
    patient = "pt-meds-fault"
    resources = [
        *BY_NAME["T21"].observations(patient),
        {"resourceType": "Patient", "id": patient, "birthDate": "1960-01-01"},
    ]
    server = FakeFhir(BASE, resources, token=TOKEN)

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/MedicationRequest"):
            if isinstance(fault, Exception):
                raise fault
            return fault
        return server(request)

    settings = dev_settings(fhir={"allowed_servers": [BASE], "deadline_seconds": 2.0})
    with respx.mock(base_url=BASE, assert_all_mocked=True) as router, TestClient(create_app(settings)) as c:
        router.route().mock(side_effect=route)
        r = c.post(SIGN, json=hook_request("order-sign", patient, None, fhir_server=BASE, token=TOKEN))
    assert r.status_code == 200, r.text
    card = prophylaxis(r.json()["cards"])
    assert CANNOT_TELL in card["detail"]
    assert ordered_drugs(card) == {"filgrastim", "valacyclovir"}
    assert risk(r.json()["cards"])["extension"]["hematotox-cds"]["hematotox"]["confirmed"]["group"] == "high"


def test_ht_low_with_gcsf_on_order_keeps_probably_not_needed_in_the_summary(client):
    """Review finding 10(e): for an HT-low patient, G-CSF on order is exactly when "G-CSF probably not
    needed" matters; the order must not take it out of the summary."""
    card = prophylaxis(cards(client, "T1", meds=[medication("g1", "68442", "filgrastim")]))
    assert "G-CSF probably not needed" in card["summary"]
    assert "already ordered: filgrastim" in line(card, "- G-CSF probably not necessary")
