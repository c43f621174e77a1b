"""The HTTP edge: discovery, error bodies as OperationOutcome, 412 when prefetch is unusable."""

from __future__ import annotations

from tests.cases import BY_NAME, hook_request, prefetch_for

SIGN = "/cds-services/hematotox-order-sign"


def assert_outcome(r, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and all(i["severity"] and i["code"] and i["diagnostics"] for i in body["issue"])
    assert "Traceback" not in r.text
    return body


def test_discovery_lists_both_hooks_with_restricted_prefetch(client):
    r = client.get("/cds-services")
    assert r.status_code == 200
    services = {s["id"]: s for s in r.json()["services"]}
    # issue 13 adds the third service, patient-view (tests/test_follow_up.py checks its prefetch)
    assert {s["hook"] for s in services.values()} == {"order-select", "order-sign", "patient-view"}
    pre = services["hematotox-order-sign"]["prefetch"]
    assert set(pre) == {
        "anc",
        "hemoglobin",
        "platelets",
        "crp",
        "ferritin",
        "ldh",
        "creatinine",
        "ecog",
        "patient",
        "conditions",
        "medications",
    }
    # Active and draft orders, not filtered by code: text-only orders must be found too.
    assert pre["medications"] == "MedicationRequest?patient={{context.patientId}}&status=active&_count=100"
    for key, query in pre.items():
        assert "{{context.patientId}}" in query
        assert "today()" not in query
        if key not in ("patient", "conditions", "medications"):  # every Observation key
            assert query.startswith("Observation?patient={{context.patientId}}&code=http://loinc.org|")
            assert "&_sort=-date&_count=" in query
    assert "http://loinc.org|11039-5" not in pre["crp"]  # qualitative CRP is never asked for
    assert "http://loinc.org|49497-1" not in pre["platelets"]


def test_unknown_service_is_404_outcome(client):
    assert_outcome(client.post("/cds-services/nope", json={}), 404)


def test_body_not_json_is_400_outcome(client):
    assert_outcome(client.post(SIGN, content=b"{not json", headers={"content-type": "application/json"}), 400)


def test_missing_fields_are_400_outcome(client):
    body = assert_outcome(client.post(SIGN, json={"hook": "order-sign"}), 400)
    assert "hookInstance" in body["issue"][0]["diagnostics"]


def test_missing_patient_id_is_400(client):
    req = hook_request("order-sign", "p", BY_NAME["T1"].observations("p"))
    del req["context"]["patientId"]
    assert_outcome(client.post(SIGN, json=req), 400)


def test_wrong_hook_for_service_is_400(client):
    req = hook_request("order-select", "p", BY_NAME["T1"].observations("p"))
    assert_outcome(client.post(SIGN, json=req), 400)


def test_no_prefetch_and_no_fhir_server_is_412(client):
    req = hook_request("order-sign", "p", None)
    body = assert_outcome(client.post(SIGN, json=req), 412)
    text = " ".join(i["diagnostics"] for i in body["issue"])
    assert "ferritin" in text and "anc" in text


def test_prefetch_slot_with_operation_outcome_and_no_server_is_412(client):
    pre = prefetch_for(BY_NAME["T1"].observations("p"), "p")
    pre["ferritin"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
    body = assert_outcome(client.post(SIGN, json=hook_request("order-sign", "p", None, prefetch=pre)), 412)
    assert [i for i in body["issue"] if "ferritin" in i["diagnostics"]]


def test_null_prefetch_key_means_nothing_found(client):
    pre = prefetch_for(BY_NAME["T1"].observations("p"), "p")
    pre["ferritin"] = None
    r = client.post(SIGN, json=hook_request("order-sign", "p", None, prefetch=pre))
    assert r.status_code == 200
    ht = r.json()["cards"][0]["extension"]["hematotox-cds"]["hematotox"]
    assert ht["confirmed"]["group"] == "indeterminate"
    assert "ferritin" in r.json()["cards"][0]["summary"]


def test_non_ld_hook_without_prefetch_answers_empty_not_412(client):
    req = hook_request("order-sign", "p", None, orders=[])
    r = client.post(SIGN, json=req)
    assert r.status_code == 200 and r.json() == {"cards": []}


def test_responses_are_not_cached(client):
    r = client.post(SIGN, json=hook_request("order-sign", "p", BY_NAME["T1"].observations("p")))
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"].startswith("application/json")
