"""Issue 12 items 6 and 8 through the HTTP layer: the card wording, and what is already on order from the
`medications` prefetch key ("on chart") and the hook's own draft orders ("in this order set"), systemic
forms only (review finding 3) (with prefetch, against the real FHIR
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


def test_coded_order_on_the_chart_is_named_and_keeps_its_button(client):
    """Review finding 3: a chart order only informs (the list may be stale); the button and the summary
    item stay."""
    card = prophylaxis(cards(client, meds=[medication("v1", "73645", "valacyclovir 500 mg")]))
    assert line(card, "- HSV/VZV") == "- HSV/VZV: valacyclovir from LD to ≥1 y and CD4 >200/µL · G [1] — on chart Mar 8"
    assert ordered_drugs(card) == {"filgrastim", "valacyclovir"}
    assert "HSV/VZV" in card["summary"]
    assert CANNOT_TELL not in card["detail"]


def test_text_only_order_is_found_by_name(client):
    card = prophylaxis(cards(client, meds=[medication("v1", None, "Valtrex 1 g tablet")]))
    assert "on chart Mar 8" in line(card, "- HSV/VZV")


@pytest.mark.parametrize("status", ["stopped", "completed", "cancelled", "entered-in-error", "on-hold", "draft", None])
def test_only_active_chart_orders_count(client, status):
    m = medication("v1", "73645", "valacyclovir", status=status or "active")
    if status is None:
        del m["status"]
    card = prophylaxis(cards(client, meds=[m]))
    assert "on chart" not in card["detail"]
    assert "valacyclovir" in ordered_drugs(card)


@pytest.mark.parametrize("intent", ["plan", "proposal", "instance-order", None])
def test_only_chart_orders_of_intent_order_count(client, intent):
    m = medication("v1", "73645", "valacyclovir")
    if intent is None:
        del m["intent"]
    else:
        m["intent"] = intent
    assert "on chart" not in prophylaxis(cards(client, meds=[m]))["detail"]


@pytest.mark.parametrize("intent", ["original-order", "reflex-order", "filler-order"])
def test_the_kinds_of_order_that_stand_for_an_ongoing_order_count(client, intent):
    """Reviewers' note of 2026-12-02: R4's request-intent codes below "order" (but instance-order) are orders."""
    m = {**medication("v1", "73645", "valacyclovir", authored="2024-03-01"), "intent": intent}
    assert "on chart Mar 1" in line(prophylaxis(cards(client, meds=[m])), "- HSV/VZV")


def test_a_dstu2_medication_order_is_an_order_by_its_type(client):
    m = {**medication("v1", "73645", "valacyclovir"), "resourceType": "MedicationOrder", "dateWritten": "2024-03-01"}
    del m["intent"], m["authoredOn"]
    assert "on chart Mar 1" in line(prophylaxis(cards(client, meds=[m])), "- HSV/VZV")


@pytest.mark.parametrize(
    ("authored", "start", "shown"),
    [
        ("2024-02-25", None, "2024-02-25"),  # LD start 2024-03-10 minus 14 days: still current
        ("2024-02-24", None, None),  # one day older: may have lapsed
        ("2024-02-24T23:30:00-02:00", None, "2024-02-25"),  # the facility's (UTC) day decides
        ("2023-06-01", "2024-03-09", "2024-03-09"),  # written long ago, starts now: the start is shown
        (None, "2024-03-12", "2024-03-12"),
        (None, None, None),  # undated: cannot tell it is current
    ],
)
def test_chart_orders_count_only_from_14_days_before_ld(client, authored, start, shown):
    m = medication("v1", "73645", "valacyclovir", authored=authored)
    if start:
        m["dosageInstruction"] = [{"timing": {"repeat": {"boundsPeriod": {"start": start}}}}]
    detail = prophylaxis(cards(client, meds=[m]))["detail"]
    if shown:
        month, day = {"2024-02-25": ("Feb", 25), "2024-03-09": ("Mar", 9), "2024-03-12": ("Mar", 12)}[shown]
        assert f"on chart {month} {day}" in detail
    else:
        assert "on chart" not in detail


@pytest.mark.parametrize("where", ["bounds", "validity"])
def test_a_chart_course_over_before_ld_is_not_named(client, where):
    """Valacyclovir for zoster written 2024-02-28, ended 2024-03-05, status left active; LD 2024-03-10."""
    m = medication("v1", "73645", "valacyclovir 1 g", authored="2024-02-28")
    if where == "bounds":
        m["dosageInstruction"] = [
            {"timing": {"repeat": {"boundsPeriod": {"start": "2024-02-28", "end": "2024-03-05"}}}}
        ]
    else:
        m["dispenseRequest"] = {"validityPeriod": {"start": "2024-02-28", "end": "2024-03-05"}}
    assert "on chart" not in prophylaxis(cards(client, meds=[m]))["detail"]


@pytest.mark.parametrize(
    ("end", "named"),
    [
        ("2024-03-10T08:00:00+00:00", False),  # ended two hours before LD start (10:00 UTC), the same day
        ("2024-03-10T09:00:00-01:00", True),  # 10:00 UTC: the LD instant itself
        ("2024-03-10T11:00:00+01:00", True),  # 10:00 UTC written in another offset
        ("2024-03-10T18:00:00+00:00", True),  # runs past LD start
        ("2024-03-10", True),  # date-only: may run to the end of LD's day
    ],
)
def test_a_timed_end_is_compared_with_the_ld_instant(client, end, named):
    """Reviewers' note of 2026-12-02: a course whose timed end falls on LD day before the LD instant is over."""
    m = medication("v1", "73645", "valacyclovir", authored="2024-02-28")
    m["dosageInstruction"] = [{"timing": {"repeat": {"boundsPeriod": {"start": "2024-02-28", "end": end}}}}]
    assert ("on chart Feb 28" in prophylaxis(cards(client, meds=[m]))["detail"]) is named


def test_a_chart_order_through_ld_is_named(client):
    m = medication("v1", "73645", "valacyclovir", authored="2024-02-28")
    m["dosageInstruction"] = [{"timing": {"repeat": {"boundsPeriod": {"start": "2024-02-28", "end": "2024-03-10"}}}}]
    assert "on chart Feb 28" in line(prophylaxis(cards(client, meds=[m])), "- HSV/VZV")


LOCAL_USE = {
    "snomed-topical-route": {
        "dosageInstruction": [{"route": {"coding": [{"system": "http://snomed.info/sct", "code": "6064005"}]}}]
    },
    "v3-ophthalmic": {
        "dosageInstruction": [
            {
                "route": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration", "code": "OPTHALTA"}
                    ]
                }
            }
        ]
    },
    "route-text": {"dosageInstruction": [{"route": {"text": "Left eye"}}]},
    # Epic route names and the eye abbreviations (review of 2438c72, F3).
    "route-OU-drop": {
        "dosageInstruction": [
            {"route": {"text": "OU"}, "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "drop"}}]}
        ]
    },
    "route-OU-alone": {"dosageInstruction": [{"route": {"text": " ou "}}]},
    "route-External": {"dosageInstruction": [{"route": {"text": "External"}}]},
    # Hyphenated and dotted forms (second review, N2).
    "eye-ointment": {"medicationCodeableConcept": {"text": "acyclovir 3% eye-ointment"}},
    "intra-nasal": {"medicationCodeableConcept": {"text": "acyclovir intra-nasal"}},
    "route-Eye-Both": {"dosageInstruction": [{"route": {"text": "Eye-Both"}}]},
    "route-O.U.": {"dosageInstruction": [{"route": {"text": "O.U."}}]},
    "route-display-OU": {
        "dosageInstruction": [{"route": {"coding": [{"system": "urn:local", "code": "9", "display": "OU"}]}}]
    },
    "route-Each-Nostril": {"dosageInstruction": [{"route": {"text": "Each Nostril"}}]},
    "dose-unit": {"dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 1, "unit": "ointment"}}]}]},
    "medication-text": {"medicationCodeableConcept": {"text": "acyclovir 5% cream"}},
    "contained-form": {
        "medicationCodeableConcept": None,
        "medicationReference": {"reference": "#med"},
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med",
                "code": {"text": "acyclovir"},
                "form": {"text": "Ophthalmic ointment"},
            }
        ],
    },
}


def _acyclovir(**extra) -> dict:
    m = {**medication("a1", "281", "acyclovir"), **extra}
    return {k: v for k, v in m.items() if v is not None}


@pytest.mark.parametrize("form", LOCAL_USE)
def test_a_local_use_order_does_not_count_on_the_chart(client, form):
    card = prophylaxis(cards(client, meds=[_acyclovir(**LOCAL_USE[form])]))
    assert "on chart" not in card["detail"]


@pytest.mark.parametrize("form", LOCAL_USE)
def test_a_local_use_draft_does_not_take_the_button_away(client, form):
    draft = _acyclovir(**LOCAL_USE[form], status="draft")
    card = prophylaxis(cards(client, orders=[*ld_orders(PATIENT), draft]))
    assert "in this order set" not in card["detail"]
    assert "valacyclovir" in ordered_drugs(card) and "HSV/VZV" in card["summary"]


SYSTEMIC = {
    "gel capsule": {"medicationCodeableConcept": {"text": "acyclovir 400 mg gel capsule"}},
    "liqui-gel": {"medicationCodeableConcept": {"text": "acyclovir 400 mg Liqui-Gel"}},
    "nasal-gastric tube": {"dosageInstruction": [{"route": {"text": "Per Nasal-Gastric tube"}}]},
    "per os": {"dosageInstruction": [{"route": {"text": "per os"}}]},
}


@pytest.mark.parametrize("form", SYSTEMIC)
def test_systemic_wordings_are_not_local_use(client, form):
    """F10: words that only look local ("gel" in a capsule's name, "nasal" in a feeding tube)."""
    card = prophylaxis(cards(client, meds=[_acyclovir(**SYSTEMIC[form])]))
    assert "on chart" in line(card, "- HSV/VZV")


def test_another_drug_of_the_class_is_named(client):
    """The item names valacyclovir; acyclovir on the chart is named (a substring is no match)."""
    card = prophylaxis(cards(client, meds=[medication("a1", "281", "acyclovir 800 mg")]))
    assert line(card, "- HSV/VZV").endswith("— on chart: acyclovir Mar 8")


def test_free_text_instructions_never_decide_the_route(client):
    """The dosage's text talks about other things ("apply lip cream if sore"): a systemic tablet still counts."""
    m = medication("v1", "73645", "valacyclovir 500 mg tablet")
    m["dosageInstruction"] = [{"text": "500 mg twice daily; apply lip cream if sore", "patientInstruction": "eye"}]
    assert "on chart Mar 8" in line(prophylaxis(cards(client, meds=[m])), "- HSV/VZV")


def test_another_patients_order_does_not_count(client):
    m = {**medication("v1", "73645", "valacyclovir"), "subject": {"reference": "Patient/someone-else"}}
    assert "on chart" not in prophylaxis(cards(client, meds=[m]))["detail"]


def test_the_hooks_own_draft_orders_take_the_duplicate_away(client):
    draft = {**medication("g1", "68442", "filgrastim", status="draft", authored=None), "intent": "proposal"}
    card = prophylaxis(cards(client, orders=[*ld_orders(PATIENT), draft]))
    assert "in this order set: filgrastim" in line(card, "- G-CSF")
    assert ordered_drugs(card) == {"valacyclovir"}
    assert "G-CSF" not in card["summary"]


def test_a_draft_and_a_chart_order_of_one_class(client):
    draft = medication("g1", "68442", "filgrastim", status="draft", authored=None)
    chart = medication("g2", "338036", "pegfilgrastim")
    card = prophylaxis(cards(client, orders=[*ld_orders(PATIENT), draft], meds=[chart]))
    assert "in this order set: filgrastim" in line(card, "- G-CSF")  # the order being signed decides
    assert ordered_drugs(card) == {"valacyclovir"}


def test_every_class_on_the_chart_keeps_every_button(client):
    card = prophylaxis(cards(client, meds=ALL_ORDERED))
    assert ordered_drugs(card) == {"filgrastim", "valacyclovir"}
    # A drug the item names is not named again; one already named on an earlier line is not repeated.
    assert line(card, "- G-CSF").endswith("— on chart Mar 8")
    assert line(card, "- Fluoroquinolone").endswith("— on chart: levofloxacin Mar 8")
    assert line(card, "- Broad azole").endswith("— on chart: posaconazole Mar 9")
    assert line(card, "- HSV/VZV").endswith("— on chart Mar 8")
    assert line(card, "- PJP").endswith("— on chart Mar 8")
    assert "on chart" not in line(card, "- Azole")  # posaconazole is named above


def test_every_class_in_this_order_set(client):
    drafts = [{**m, "status": "draft", "intent": "proposal"} for m in ALL_ORDERED]
    card = prophylaxis(cards(client, orders=[*ld_orders(PATIENT), *drafts]))
    assert ordered_drugs(card) == set()
    # The monitoring order is no drug: still offered.
    assert [s["label"] for s in card["suggestions"]] == ["Order blood-count monitoring schedule (local default)"]


@pytest.mark.parametrize("meds", ["absent", {"resourceType": "OperationOutcome", "issue": []}])
def test_unreadable_list_cannot_tell_and_still_offers_the_order(client, meds):
    card = prophylaxis(cards(client, meds=meds))  # no fhirServer to fetch it from: optional, not a 412
    assert CANNOT_TELL in card["detail"]
    assert ordered_drugs(card) == {"filgrastim", "valacyclovir"}


def test_null_means_looked_and_found_nothing(client):
    card = prophylaxis(cards(client, meds=None))
    assert CANNOT_TELL not in card["detail"] and "on chart" not in card["detail"]
    assert ordered_drugs(card) == {"filgrastim", "valacyclovir"}


def test_a_sites_extra_drug_code_counts():
    settings = dev_settings(clinical={"extra_drug_rxnorm": {"valacyclovir": ["9999001"]}})
    m = medication("v1", "9999001", "house formulary antiviral")
    with TestClient(create_app(settings)) as c:
        card = prophylaxis(cards(c, meds=[m]))
    assert "on chart Mar 8" in line(card, "- HSV/VZV")


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
    assert "on chart Mar 8" in line(card, "- HSV/VZV")
    assert "on chart" not in line(card, "- G-CSF")  # the stopped filgrastim does not count
    assert ordered_drugs(card) == {"filgrastim", "valacyclovir"}


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
    assert "on chart: filgrastim Mar 8" in line(card, "- G-CSF probably not necessary")


def test_a_draft_named_on_an_earlier_line_leaves_the_later_item_whole(client):
    """Second review, N1: on HT-high, R5 names the azole draft; R9 keeps its condition, not cut to "Azole"."""
    draft = medication("az", "282446", "posaconazole", status="draft", authored=None)
    card = prophylaxis(cards(client, orders=[*ld_orders(PATIENT), draft]))
    assert "in this order set: posaconazole" in line(card, "- Broad azole")
    assert line(card, "- Azole").startswith("- Azole if prolonged neutropenia or steroids")
