"""clinical-spec §2–§4: EASIX (E1–E6), NRM flags (N1–N8), the recommendation matrix, emitted FHIR
resources valid R4, and site configuration — all through the HTTP layer."""

from __future__ import annotations

import itertools
import re

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_hooks.validate import card_violations
from service.clinical.recommendations import SHORT_SOURCE, TABLE
from service.web.app import create_app
from tests.cases import DEFAULTS, hook_request, obs, prefetch_for
from tests.conftest import dev_settings

SIGN = "/cds-services/hematotox-order-sign"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"


def condition(cid, system, code, *, clinical="active", verification="confirmed", patient="p"):
    c = {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{patient}"},
        "code": {"coding": [{"system": system, "code": code}]},
    }
    if clinical:
        c["clinicalStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]
        }
    if verification:
        c["verificationStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]
        }
    return c


def call(client, observations, conditions=(), patient="p", **kw):
    observations = [{**o, "subject": {"reference": f"Patient/{patient}"}} for o in observations]
    pre = prefetch_for(observations, patient)
    pre["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": c} for c in conditions]}
    r = client.post(SIGN, json=hook_request("order-sign", patient, None, prefetch=pre, **kw))
    assert r.status_code == 200, r.text
    body = r.json()
    assert card_violations(body) == []
    assert len(body["cards"]) <= 3
    return body["cards"]


def risk(cards):
    return next(c for c in cards if "hematotox" in c["extension"]["hematotox-cds"])


def recs(cards):
    return next(c for c in cards if "recommendations" in c["extension"]["hematotox-cds"])


def base_obs(**replace):
    out = []
    for _analyte, items in {**DEFAULTS, **replace}.items():
        out += [{**o, "subject": {"reference": "Patient/p"}} for o in items or []]
    return out


LDH = lambda v, unit="U/L": obs("ldh", "2532-0", v, unit)  # noqa: E731
CREA = lambda v, unit="mg/dL", code="2160-0": obs("crea", code, v, unit)  # noqa: E731
PLT = lambda v: obs("plt", "777-3", v, "10*9/L")  # noqa: E731


# ---------------------------------------------------------------- EASIX E1–E6


@pytest.mark.parametrize(
    "name,extra,plt,easix,log2,above,m_easix",
    [
        ("E1", [LDH(250), CREA(1.0)], 100, 2.5, 1.32, False, None),
        ("E2", [LDH(250), CREA(88.4, "umol/L", "14682-9")], 100, 2.5, 1.32, False, None),
        ("E3", [LDH(467), CREA(1.0)], 100, 4.67, 2.22, False, None),
        ("E4", [LDH(4.17, "ukat/L"), CREA(1.0)], 100, 2.5, 1.32, False, None),
        ("E5", [LDH(250), obs("crp", "1988-5", 20, "mg/L")], 100, None, None, None, 5.0),
    ],
)
def test_easix_cases(client, name, extra, plt, easix, log2, above, m_easix):
    crp_override = [o for o in extra if o["id"] == "crp"]
    labs = [o for o in extra if o["id"] != "crp"]
    observations = base_obs(platelets=[PLT(plt)], **({"crp": crp_override} if crp_override else {})) + labs
    nrm = risk(call(client, observations))["extension"]["hematotox-cds"]["nrm"]
    assert nrm["easix"] == easix
    assert nrm["easixLog2"] == log2
    assert nrm["easixAboveKorellCutoff"] is above
    if m_easix is not None:
        assert nrm["mEasix"] == m_easix
    if name == "E4":
        assert nrm["sEasix"] == 2.5  # 250.2 / 100 = 2.502 → 2.50


def test_e4_exact_value_before_rounding():
    from decimal import Decimal

    from service.clinical.hematotox import Points
    from service.clinical.labs import Component, LabResult
    from service.clinical.nrm import easix

    def comp(a, v):
        r = LabResult(a, 0, Decimal(v), None, None, False, False, None)
        return Component(a, "current", r, Points(0, 0), Points(0, 0))

    from service.clinical.units import to_canonical

    ldh = to_canonical("ldh", Decimal("4.17"), "ukat/L")
    e = easix({"ldh": comp("ldh", ldh), "creatinine": comp("creatinine", "1.0"), "platelets": comp("platelets", "100")})
    assert e.easix == Decimal("2.502")


@pytest.mark.parametrize(
    "observations",
    [
        [*base_obs(platelets=[PLT(0)]), LDH(250), CREA(1.0)],  # E6: platelets 0
        [*base_obs(platelets=None), LDH(250), CREA(1.0)],  # E6: platelets missing
        [*base_obs(), LDH(250)],  # creatinine missing
    ],
)
def test_e6_easix_not_computed(client, observations):
    nrm = risk(call(client, observations))["extension"]["hematotox-cds"]["nrm"]
    assert nrm["easix"] is None and nrm["easixLog2"] is None and nrm["easixAboveKorellCutoff"] is None


# ---------------------------------------------------------------- NRM flags N1–N8


@pytest.mark.parametrize(
    "name,conditions,expected",
    [
        ("N1", [condition("c1", ICD10CM, "E11.9")], True),
        ("N2", [condition("c1", SNOMED, "46635009", verification=None)], True),
        ("N3", [condition("c1", ICD10CM, "R73.03")], False),
        ("N4", [condition("c1", ICD10CM, "E11.9", verification="refuted")], False),
        ("N5", [condition("c1", ICD10CM, "O24.4")], False),
        ("N6", [condition("c1", ICD10CM, "E09.9")], True),
        ("resolved", [condition("c1", ICD10CM, "E11.9", clinical="resolved")], False),
        ("gestational-snomed", [condition("c1", SNOMED, "11687002")], False),
        ("other patient", [condition("c1", ICD10CM, "E11.9", patient="someone-else")], False),
    ],
)
def test_diabetes_flag(client, name, conditions, expected):
    cards = call(client, base_obs(), conditions)
    nrm = risk(cards)["extension"]["hematotox-cds"]["nrm"]
    assert nrm["diabetes"] is expected
    rec_ids = {r["id"] for r in recs(cards)["extension"]["hematotox-cds"]["recommendations"]}
    assert ("R13" in rec_ids) is expected
    if expected:
        assert nrm["diabetesEvidence"] == ["Condition/c1"]
        assert "OR 4.4" in risk(cards)["detail"]


def test_n7_elevated_ferritin_from_reference_range_is_distinct_from_points(client):
    fer = obs("fer", "2276-4", 450, "ng/mL", referenceRange=[{"high": {"value": 400, "unit": "ng/mL"}}])
    cards = call(client, base_obs(ferritin=[fer]))
    ext = risk(cards)["extension"]["hematotox-cds"]
    assert ext["nrm"]["elevatedFerritin"] is True
    assert ext["nrm"]["ferritinUpperLimit"] == {"basis": "reference-range", "value": 400, "unit": "ng/mL"}
    ferritin = next(c for c in ext["hematotox"]["components"] if c["analyte"] == "ferritin")
    assert ferritin["points"] == {"min": 0, "max": 0}
    assert "R14" in {r["id"] for r in recs(cards)["extension"]["hematotox-cds"]["recommendations"]}


def test_n8_ferritin_without_reference_range_is_indeterminate(client):
    cards = call(client, base_obs(ferritin=[obs("fer", "2276-4", 1200, "ng/mL")]))
    ext = risk(cards)["extension"]["hematotox-cds"]
    assert ext["nrm"]["elevatedFerritin"] is None
    assert next(c for c in ext["hematotox"]["components"] if c["analyte"] == "ferritin")["points"] == {
        "min": 1,
        "max": 1,
    }
    assert "cannot tell" in risk(cards)["detail"]


def test_configured_ferritin_uln_decides_when_the_lab_gives_none():
    with TestClient(create_app(dev_settings(clinical={"ferritin_uln_ng_ml": 1000}))) as c:
        cards = call(c, base_obs(ferritin=[obs("fer", "2276-4", 1200, "ng/mL")]))
    assert risk(cards)["extension"]["hematotox-cds"]["nrm"]["elevatedFerritin"] is True


def test_interpretation_high_flags_ferritin(client):
    fer = obs(
        "fer",
        "2276-4",
        500,
        "ng/mL",
        interpretation=[
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H"}]}
        ],
    )
    assert risk(call(client, base_obs(ferritin=[fer])))["extension"]["hematotox-cds"]["nrm"]["elevatedFerritin"] is True


def test_conditions_unavailable_means_cannot_tell(client):
    pre = prefetch_for(base_obs(), "p")
    del pre["conditions"]  # and no FHIR server to fetch it from: optional key, not a 412
    r = client.post(SIGN, json=hook_request("order-sign", "p", None, prefetch=pre))
    assert r.status_code == 200
    assert risk(r.json()["cards"])["extension"]["hematotox-cds"]["nrm"]["diabetes"] is None


def test_age_and_ecog_context(client):
    ecog = obs("ecog", "89247-1", None, None, patient="p")
    ecog.pop("valueQuantity")
    ecog["valueInteger"] = 2
    pre = prefetch_for(base_obs(), "p")
    pre["ecog"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": ecog}]}
    pre["patient"]["birthDate"] = "1955-03-11"
    r = client.post(SIGN, json=hook_request("order-sign", "p", None, prefetch=pre))
    nrm = risk(r.json()["cards"])["extension"]["hematotox-cds"]["nrm"]
    assert nrm["age"] == 68 and nrm["ecog"] == 2 and nrm["ecogAtLeast2"] is True


# ---------------------------------------------------------------- the recommendation matrix

GROUP_LABS = {"high": base_obs(platelets=[PLT(60)]), "low": base_obs(), "indeterminate": base_obs(platelets=None)}
ALL_PATIENTS = {"R6", "R7", "R8", "R9", "R10", "R11"}
EXPECTED = {"high": {"R1", "R2", "R3", "R4", "R5"}, "low": {"R1L", "R2L", "R3L"}, "indeterminate": set()}
EXPECTED_ORDERS = {
    "high": {"filgrastim", "valacyclovir", "57021-8"},
    "low": {"valacyclovir"},
    "indeterminate": {"valacyclovir"},
}


def _order_codes(card) -> set[str]:
    out = set()
    for s in card.get("suggestions", []):
        for a in s["actions"]:
            res = a["resource"]
            if res["resourceType"] == "MedicationRequest":
                out.add(res["medicationCodeableConcept"]["text"])
            else:
                out.add(res["code"]["coding"][0]["code"])
    return out


@pytest.mark.parametrize(
    "group,dm,fer", list(itertools.product(["high", "low", "indeterminate"], [False, True], [False, True]))
)
def test_recommendation_matrix(client, group, dm, fer):
    observations = list(GROUP_LABS[group])
    if fer:
        observations = [o for o in observations if o["id"] != "fer"] + [
            obs("fer", "2276-4", 500, "ng/mL", referenceRange=[{"high": {"value": 300, "unit": "ng/mL"}}])
        ]
    conditions = [condition("dm", ICD10CM, "E11.9")] if dm else []
    cards = call(client, observations, conditions)
    assert len(cards) == 2
    card = recs(cards)
    ids = {r["id"] for r in card["extension"]["hematotox-cds"]["recommendations"]}
    expected = ALL_PATIENTS | EXPECTED[group] | ({"R13"} if dm else set()) | ({"R14"} if fer else set())
    assert ids == expected
    assert _order_codes(card) == EXPECTED_ORDERS[group]
    if group == "indeterminate":
        assert card["extension"]["hematotox-cds"]["pendingLabs"] == ["R1", "R2", "R3", "R4", "R5"]
        # Review finding 10(b): each pending item carries its strength and its numbered source.
        pending = next(x for x in card["detail"].splitlines() if x.startswith("**If the labs confirm HT-high**"))
        sources = next(x for x in card["detail"].splitlines() if x.startswith("Sources:"))
        for rid in ("R1", "R2", "R3", "R4", "R5"):
            item = next(r for r in TABLE if r.id == rid)
            n = re.search(rf"\({rid} · {item.strength} \[(\d)\]\)", pending)
            assert n, (rid, pending)
            assert f"[{n.group(1)}] {SHORT_SOURCE[item.source]}" in sources
        assert "MDR" in pending and "unproven" in pending  # §4: R2's caveat and R5's status travel with them
        assert _order_codes(risk(cards)) == {"777-3"}  # exactly the missing lab
    # no repeated text across the cards
    assert risk(cards)["summary"] != card["summary"]
    for line in card["detail"].splitlines():
        if len(line) > 40:
            assert line not in risk(cards)["detail"]


def test_every_emitted_resource_is_valid_r4(client):
    seen = 0
    for _group, labs in GROUP_LABS.items():
        for card in call(client, labs, [condition("dm", ICD10CM, "E11.9")]):
            for s in card.get("suggestions", []):
                assert s["uuid"] and card["selectionBehavior"] == "any"
                for a in s["actions"]:
                    res = a["resource"]
                    model = {"MedicationRequest": MedicationRequest, "ServiceRequest": ServiceRequest}[
                        res["resourceType"]
                    ]
                    model.model_validate(res)
                    assert res["subject"] == {"reference": "Patient/p"}
                    seen += 1
            if card.get("suggestions"):
                assert all(o["display"] for o in card["overrideReasons"])
    assert seen >= 6


def test_every_card_carries_the_ruleset_version(client):
    for card in call(client, GROUP_LABS["high"]):
        version = card["extension"]["hematotox-cds"]["rulesetVersion"]
        assert version in card["detail"]


def test_site_configuration_switches():
    settings = dev_settings(
        recommendations={
            "disabled": ["R5", "R11"],
            "monitoring_schedule": "CBC daily to day +14",
            "drugs": {"antiviral": {"rxnorm": "281", "display": "acyclovir", "dose": "800 mg twice daily"}},
        }
    )
    with TestClient(create_app(settings)) as c:
        card = recs(call(c, GROUP_LABS["high"]))
    ids = {r["id"] for r in card["extension"]["hematotox-cds"]["recommendations"]}
    assert "R5" not in ids and "R11" not in ids and "R1" in ids
    assert "acyclovir" in _order_codes(card) and "valacyclovir" not in _order_codes(card)
    notes = [
        a["resource"]["note"][0]["text"]
        for s in card["suggestions"]
        for a in s["actions"]
        if a["resource"]["resourceType"] == "ServiceRequest"
    ]
    assert notes and notes[0].startswith("CBC daily to day +14")


def test_indeterminate_as_possible_high_is_labelled_extrapolation():
    with TestClient(create_app(dev_settings(recommendations={"treat_indeterminate_as_high": True}))) as c:
        card = recs(call(c, GROUP_LABS["indeterminate"]))
    strengths = {r["id"]: r["strength"] for r in card["extension"]["hematotox-cds"]["recommendations"]}
    assert strengths["R1"] == "X" and strengths["R6"] == "G"
    assert "local protocol" in card["detail"]
    assert not any(s.get("isRecommended") for s in card["suggestions"] if "filgrastim" in s["label"])


def test_ht_low_never_suppresses_the_all_patient_items(client):
    ids = {r["id"] for r in recs(call(client, GROUP_LABS["low"]))["extension"]["hematotox-cds"]["recommendations"]}
    assert {"R6", "R7", "R8", "R11"} <= ids


def test_ecog_takes_the_most_recent_and_survives_odd_dates():
    from service.clinical.nrm import ecog

    def e(value, when):
        o = {
            "resourceType": "Observation",
            "status": "final",
            "subject": {"reference": "Patient/p"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "89247-1"}]},
            "valueInteger": value,
        }
        if when is not None:
            o["effectiveDateTime"] = when
        return o

    assert ecog([e(1, "2024-03-01T10:00:00+00:00"), e(3, "2024-03-05T10:00:00+01:00")], "p") == 3
    assert ecog([e(2, {"not": "a date"}), e(0, "2024-03-01")], "p") == 0
    assert ecog([e(4, None)], "p") == 4
    assert ecog([e(7, "2024-03-01")], "p") is None


def test_site_snomed_diabetes_descendants():
    code = "190372001"  # a site's own descendant code, not in the shipped list
    with TestClient(create_app(dev_settings())) as c:
        assert (
            risk(call(c, base_obs(), [condition("c1", SNOMED, code)]))["extension"]["hematotox-cds"]["nrm"]["diabetes"]
            is False
        )
    with TestClient(create_app(dev_settings(clinical={"extra_diabetes_snomed": [code]}))) as c:
        assert (
            risk(call(c, base_obs(), [condition("c1", SNOMED, code)]))["extension"]["hematotox-cds"]["nrm"]["diabetes"]
            is True
        )


@pytest.mark.parametrize("group", ["high", "low", "indeterminate"])
def test_r11_carries_both_strengths_of_the_spec(client, group):
    """Review finding 10(c), clinical-spec §4 R11: vaccination P (DESCAR-T) + G (ASH-SAP timing)."""
    card = recs(call(client, list(GROUP_LABS[group]), []))
    lines = card["detail"].splitlines()
    covid = next(x for x in lines if x.startswith("- COVID-19"))
    found = re.search(r"· P \[(\d)\]; timing G \[(\d)\]$", covid)
    assert found, covid
    sources = next(x for x in lines if x.startswith("Sources:"))
    assert f"[{found.group(1)}] DESCAR-T" in sources and f"[{found.group(2)}] ASH-SAP" in sources


def test_conditions_and_ecog_read_the_patient_as_the_labs_do():
    """Review of 2cf864d, F9: one reader (fhirjson.owner). Another patient's Condition or ECOG is left out, in
    any reference form; one whose subject cannot be read, in this patient's search, counts (never hide a risk
    factor for a malformed reference); this patient's versioned reference is read."""
    from service.clinical.nrm import diabetes, ecog

    dm = {"resourceType": "Condition", "code": {"coding": [{"system": ICD10CM, "code": "E11.9"}]}}
    assert diabetes([{**dm, "subject": {"reference": "urn:uuid:1"}}], "p")[0] is True
    assert diabetes([{**dm, "subject": "Patient/q"}], "p")[0] is False
    assert diabetes([{**dm, "subject": {"reference": "https://x/fhir/Patient/q/_history/2"}}], "p")[0] is False
    e = {
        "resourceType": "Observation",
        "status": "final",
        "valueInteger": 3,
        "effectiveDateTime": "2024-03-01",
        "code": {"coding": [{"system": "http://loinc.org", "code": "89247-1"}]},
    }
    assert ecog([{**e, "subject": {"reference": "Patient/p/_history/2"}}], "p") == 3
    assert ecog([{**e, "subject": {"reference": "Patient/q"}}], "p") is None
    # Second review, N8: an unreadable one is used only when the patient has none of their own.
    newer = {**e, "valueInteger": 0, "effectiveDateTime": "2024-03-05", "subject": {"display": "John Roe"}}
    assert ecog([{**e, "subject": {"reference": "Patient/p"}}, newer], "p") == 3
    assert ecog([newer], "p") == 0
