"""The follow-up service (`hematotox-follow-up`, patient-view) through HTTP: discovery, C1–C8 with full
prefetch, no card and no lab query outside a course, the 412 paths (respx faults), bad shapes, drafts
and the card's budget. The same cases against the real FHIR server: tests/test_integration_follow_up.py.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from cds_hooks.validate import card_violations
from service.cards.follow_up_card import DETAIL_MAX, FollowUpView, detail, summary
from service.cards.follow_up_hook import ADMINISTRATIONS_KEY, COURSE_KEYS, INFUSION_KEY, ORDERS_KEY
from service.clinical.assessment import assess_patient
from service.clinical.course import (
    Course as ClinicalCourse,
)
from service.clinical.course import (
    CourseResult,
    Infusion,
    Interval,
    Latest,
    LdStart,
    Measures,
    Phenotype,
)
from service.clinical.follow_up import FollowUpRules, Item, applicable_items, cbc_interval
from service.clinical.hematotox import HT_ANALYTES
from service.clinical.labs import LabResult
from service.clinical.orders import Trigger
from service.clinical.valuesets import value_sets
from service.web.app import create_app
from tests.cases import searchset
from tests.conftest import dev_settings
from tests.course_data import (
    AXI_CEL,
    C1,
    C2,
    C8,
    COURSES,
    FILGRASTIM,
    Course,
    at,
    check_course,
    daily,
    full_prefetch,
    medication,
    patient_view,
    today,
)
from tests.fake_fhir import FakeFhir, outcome

URL = "/cds-services/hematotox-follow-up"
BASE = "https://ehr.test/fhir"
TOKEN = "at-follow-up-SECRET-41"
PATIENT = "pt-follow"
DEADLINE = 0.5
SLACK = 0.3


@pytest.fixture(scope="module")
def app_client() -> TestClient:
    settings = dev_settings(fhir={"allowed_servers": [BASE], "deadline_seconds": DEADLINE, "max_pages": 5})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def fhir() -> respx.MockRouter:
    with respx.mock(base_url=BASE, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def post(client: TestClient, patient: str = PATIENT, **kwargs) -> httpx.Response:
    return client.post(URL, json=patient_view(patient, **kwargs))


def the_card(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert card_violations(body) == []
    (card,) = body["cards"]
    return card


def course_of(response: httpx.Response) -> dict:
    return the_card(response)["extension"]["hematotox-cds"]["course"]


def resource_type(request: httpx.Request) -> str:
    return urlsplit(str(request.url)).path.rsplit("/", 1)[-1]


# ------------------------------------------------------------------------------------------ discovery


def test_discovery_lists_three_services_and_follow_up_asks_only_for_infusions(client):
    services = {s["id"]: s for s in client.get("/cds-services").json()["services"]}
    assert set(services) == {"hematotox-order-select", "hematotox-order-sign", "hematotox-follow-up"}
    follow = services["hematotox-follow-up"]
    assert follow["hook"] == "patient-view" and follow["title"] and follow["description"]
    (key, query) = next(iter(follow["prefetch"].items()))
    assert list(follow["prefetch"]) == [INFUSION_KEY] and key == INFUSION_KEY
    path, _, params = query.partition("?")
    assert path == "MedicationAdministration"
    parsed = parse_qs(params)
    assert parsed["patient"] == ["{{context.patientId}}"]
    assert parsed["_sort"] == ["-effective-time"] and parsed["_count"] == ["10"]
    # Every CAR-T product code of the value set, and no date arithmetic (restricted prefetch subset).
    codes = {c.split("|")[1] for c in parsed["code"][0].split(",")}
    assert codes == set(value_sets().product_rxnorm)
    assert "today()" not in query and "date" not in parsed and "effective-time" not in parsed


def test_site_codes_extend_the_infusion_search_and_procedures_get_their_own_key(tmp_path):
    settings = dev_settings(
        clinical={"extra_cart_rxnorm": {"tisagenlecleucel": ["LOCAL-KYM-1"]}},
        follow_up={"infusion_procedure_codes": ["http://snomed.info/sct|1234567", "urn:local|cart-infusion"]},
        feedback={"sqlite_path": str(tmp_path / "f.sqlite3")},
    )
    with TestClient(create_app(settings)) as c:
        (follow,) = [s for s in c.get("/cds-services").json()["services"] if s["hook"] == "patient-view"]
    assert "rxnorm|LOCAL-KYM-1" in follow["prefetch"][INFUSION_KEY]
    proc = follow["prefetch"]["cartInfusionProcedures"]
    assert proc.startswith("Procedure?patient={{context.patientId}}&code=")
    assert "http://snomed.info/sct|1234567" in proc and "urn:local|cart-infusion" in proc and "_sort=-date" in proc


def test_openapi_accepts_patient_view_context(client):
    schema = client.get("/openapi.json").json()["paths"]["/cds-services/{service_id}"]["post"]
    body = schema["requestBody"]["content"]["application/json"]["schema"]
    assert "patient-view" in body["properties"]["hook"]["enum"]
    assert body["properties"]["context"]["required"] == ["patientId"]


# ---------------------------------------------------------------------------- C1–C8, full prefetch


@pytest.mark.parametrize("course", COURSES, ids=[c.name for c in COURSES])
def test_worked_course_with_full_prefetch(app_client, course: Course, fhir):
    patient = f"pt-{course.name.lower()}"
    card = the_card(post(app_client, patient, prefetch=full_prefetch(course.resources(patient)), fhir_server=BASE))
    assert not fhir.calls  # everything came in the prefetch
    ext = card["extension"]["hematotox-cds"]
    check_course(ext["course"], course.name)
    c = ext["course"]
    assert c["day"] == course.day and c["day0"] == course.day0().isoformat()
    assert c["ldStartSource"] == "administration" and c["ldStart"] == at(course.day0(), -5, 9)
    # The HT result at LD is the risk card's "hematotox" object, scored at the LD start.
    assert set(c["ht"]) >= {"confirmed", "components"} and c["ht"]["confirmed"]["group"] == "high"
    assert [x["analyte"] for x in c["ht"]["components"]] == list(HT_ANALYTES)
    assert ext["rulesetVersion"].startswith("1.")
    assert len(card["summary"]) < 140 and len(card["detail"]) <= DETAIL_MAX
    assert card["summary"].startswith(f"Day +{course.day} after CAR-T, HT-high at LD")
    for item in c["items"]:
        assert f"**{item}**" in card["detail"]
    assert card["overrideReasons"] and card["source"]["label"]
    assert ("links" in card) is (c["items"] != ["F5"])  # F5 is our local default: no source to link
    assert "suggestions" not in card or all(s["actions"] for s in card["suggestions"])


def test_c8_live_course_card(app_client):
    card = the_card(post(app_client, "pt-c8", prefetch=full_prefetch(C8.resources("pt-c8"))))
    c = card["extension"]["hematotox-cds"]["course"]
    assert c["items"] == ["F1", "F2"]  # not F4: filgrastim given from day 2
    assert c["phenotype"]["final"] is False and "aplastic" in c["phenotype"]["candidates"]
    assert "value" not in c["phenotype"]
    assert card["indicator"] == "warning"
    d = card["detail"]
    assert "**Day +9**" in d and "HIGH" in d and "ANC 0.3" in d and "current run 10 d" in d
    assert "fluconazole or posaconazole" in d and "levofloxacin or ciprofloxacin" in d and "MDR" in d
    assert "*G*" in d and "[1]" in d and "[2]" in d


def test_completed_course_gives_no_card(app_client, fhir):
    # Day +100 is the course's last day and the course is complete; nothing is due on it.
    done = Course("done", 100, anc={0: 3.0, **daily(1, 5, 0.3), **daily(6, 100, 2.0)})
    r = post(app_client, "pt-done", prefetch=full_prefetch(done.resources("pt-done")), fhir_server=BASE)
    assert r.status_code == 200 and r.json() == {"cards": []}
    assert not fhir.calls


def test_ld_start_from_an_order_or_assumed(app_client):
    ordered = Course("ord", 9, anc=daily(0, 9, 0.3), ld="order")
    c = course_of(post(app_client, "pt-ord", prefetch=full_prefetch(ordered.resources("pt-ord"))))
    assert c["ldStartSource"] == "order" and c["ldStart"] == at(ordered.day0(), -5, 9)
    assumed = Course("none", 9, anc=daily(0, 9, 0.3), ld="none")
    card = the_card(post(app_client, "pt-none", prefetch=full_prefetch(assumed.resources("pt-none"))))
    c = card["extension"]["hematotox-cds"]["course"]
    assert c["ldStartSource"] == "assumed" and "t0-assumed" in c["flags"]
    assert c["ldStart"].startswith((assumed.day0() - timedelta(days=5)).isoformat())
    assert "LD start assumed" in card["detail"]


def test_not_ht_high_gets_no_f1_or_f4(app_client):
    low = Course("low", 9, anc=daily(0, 9, 0.3), ld_labs={"anc": 3.0, "platelets": 250, "hemoglobin": 12.0, "crp": 0.5})
    # Without ferritin the score is indeterminate (0–2): F1/F4 are HT-high items, F2 is for everyone.
    c = course_of(post(app_client, "pt-low", prefetch=full_prefetch(low.resources("pt-low"))))
    assert c["ht"]["confirmed"]["group"] == "indeterminate"
    assert c["items"] == ["F2"]
    normal = Course("normal", 9, anc=daily(0, 9, 0.3), ld_labs=dict(C1.ld_labs, ferritin=300))
    c = course_of(post(app_client, "pt-normal", prefetch=full_prefetch(normal.resources("pt-normal"))))
    assert c["ht"]["confirmed"]["group"] == "low" and c["items"] == ["F2"]


# ----------------------------------------------------------- not in a course: no cards, no lab query


def test_no_infusion_with_prefetch_touches_nothing(app_client, fhir, caplog):
    for empty in (searchset([]), None):
        with caplog.at_level(logging.INFO, logger="hematotox.hook"):
            r = post(app_client, prefetch={INFUSION_KEY: empty}, fhir_server=BASE, token=TOKEN)
        assert r.status_code == 200 and r.json() == {"cards": []}
    assert not fhir.calls
    line = [rec.event for rec in caplog.records if rec.name == "hematotox.hook" and rec.msg == "hook"][-1]
    assert line["service"] == "hematotox-follow-up" and line["cards"] == 0 and line["fhir"]["keysFetched"] == 0


def test_no_infusion_without_prefetch_costs_one_search_and_no_lab_query(app_client, fhir):
    server = FakeFhir(BASE, [], token=TOKEN)
    fhir.route().mock(side_effect=server)
    r = post(app_client, fhir_server=BASE, token=TOKEN)
    assert r.status_code == 200 and r.json() == {"cards": []}
    assert [resource_type(q) for q in server.requests] == ["MedicationAdministration"]
    assert server.requests[0].url.params["patient"] == PATIENT


def test_infusion_outside_the_last_100_days_is_no_course(app_client, fhir):
    old = medication(
        "MedicationAdministration", "old", PATIENT, AXI_CEL, "Yescarta", at(today() - timedelta(days=101), 0, 14)
    )
    server = FakeFhir(BASE, [old], token=TOKEN)
    fhir.route().mock(side_effect=server)
    r = post(app_client, fhir_server=BASE, token=TOKEN)
    assert r.status_code == 200 and r.json() == {"cards": []}
    assert [resource_type(q) for q in server.requests] == ["MedicationAdministration"]


def test_other_patients_and_not_done_infusions_do_not_start_a_course(app_client, fhir):
    d0 = at(today() - timedelta(days=9), 0, 14)
    foreign = medication("MedicationAdministration", "f", "someone-else", AXI_CEL, "Yescarta", d0)
    not_done = medication("MedicationAdministration", "n", PATIENT, AXI_CEL, "Yescarta", d0, status="not-done")
    r = post(app_client, prefetch={INFUSION_KEY: searchset([foreign, not_done])}, fhir_server=BASE)
    assert r.status_code == 200 and r.json() == {"cards": []}
    assert not fhir.calls


# --------------------------------------------------------------------------- no prefetch, FHIR (respx)


def test_course_without_prefetch_equals_full_prefetch(app_client, fhir):
    resources = C8.resources(PATIENT)
    with_prefetch = course_of(post(app_client, prefetch=full_prefetch(resources)))
    server = FakeFhir(BASE, resources, token=TOKEN)
    fhir.route().mock(side_effect=server)
    fetched = course_of(post(app_client, fhir_server=BASE, token=TOKEN))
    assert fetched == with_prefetch
    kinds = sorted(resource_type(q) for q in server.requests)
    assert kinds == sorted(
        ["MedicationAdministration"] * 2 + ["MedicationRequest"] + ["Observation"] * 5
    )  # infusions, then the 7 course keys in parallel
    assert all(q.headers["authorization"] == f"Bearer {TOKEN}" for q in server.requests)


def test_partial_prefetch_fetches_only_what_is_missing(app_client, fhir):
    resources = C2.resources(PATIENT)
    pre = full_prefetch(resources)
    del pre["anc"], pre[ORDERS_KEY]
    server = FakeFhir(BASE, resources, token=TOKEN)
    fhir.route().mock(side_effect=server)
    c = course_of(post(app_client, prefetch=pre, fhir_server=BASE, token=TOKEN))
    check_course(c, "C2")
    assert sorted(resource_type(q) for q in server.requests) == ["MedicationRequest", "Observation"]


# ------------------------------------------------------------------------------------------------ 412


def assert_412(response: httpx.Response, keys: list[str], code: str | None = None) -> dict:
    assert response.status_code == 412, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and "cards" not in body
    named = sorted(i["diagnostics"].split("'")[1] for i in body["issue"] if "'" in i["diagnostics"])
    assert named == sorted(keys), body
    if code:
        assert {i["code"] for i in body["issue"]} == {code}
    assert TOKEN not in response.text and PATIENT not in response.text
    return body


def test_infusion_search_failing_is_412_not_an_empty_answer(app_client, fhir):
    fhir.route().mock(return_value=httpx.Response(500, json=outcome("exception")))
    assert_412(post(app_client, fhir_server=BASE, token=TOKEN), [INFUSION_KEY])


def test_infusion_search_timeout_is_412_within_the_deadline(app_client, fhir):
    fhir.route().mock(side_effect=httpx.ReadTimeout("slow"))
    started = time.monotonic()
    r = post(app_client, fhir_server=BASE, token=TOKEN)
    assert time.monotonic() - started < DEADLINE + SLACK
    assert_412(r, [INFUSION_KEY], "timeout")


@pytest.mark.parametrize("key", ["anc", "platelets", "hemoglobin", "crp", "ferritin", ADMINISTRATIONS_KEY, ORDERS_KEY])
def test_a_course_key_that_cannot_be_read_is_412_naming_it(app_client, fhir, key):
    resources = C8.resources(PATIENT)
    pre = full_prefetch(resources)
    pre[key] = outcome("exception", "the EHR could not run it")  # the client tried and failed
    fhir.route().mock(return_value=httpx.Response(503, json=outcome("transient")))
    assert_412(post(app_client, prefetch=pre, fhir_server=BASE, token=TOKEN), [key])


def test_course_keys_without_a_fhir_server_are_412(app_client):
    pre = {INFUSION_KEY: full_prefetch(C8.resources(PATIENT))[INFUSION_KEY]}
    body = assert_412(post(app_client, prefetch=pre), list(COURSE_KEYS), "required")
    assert all("no fhirServer" in i["diagnostics"] for i in body["issue"])


def test_a_server_not_on_the_allowlist_is_never_contacted(app_client, fhir):
    route = fhir.route().mock(return_value=httpx.Response(200, json=searchset([])))
    r = post(app_client, fhir_server="https://evil.test/fhir", token=TOKEN)
    assert r.status_code == 412 and r.json()["issue"][0]["code"] == "forbidden"
    assert not route.called
    # With the infusions prefetched and no course, the server is not needed and nothing is refused.
    r = post(app_client, prefetch={INFUSION_KEY: None}, fhir_server="https://evil.test/fhir", token=TOKEN)
    assert r.status_code == 200 and r.json() == {"cards": []}


def test_paging_past_the_cap_is_412_never_a_truncated_course(app_client, fhir):
    resources = C8.resources(PATIENT)
    pre = full_prefetch(resources)
    del pre["anc"]
    server = FakeFhir(BASE, resources, token=TOKEN, max_page_size=1)  # 10+ ANC results, 5 pages allowed
    fhir.route().mock(side_effect=server)
    assert_412(post(app_client, prefetch=pre, fhir_server=BASE, token=TOKEN), ["anc"], "incomplete")


# ------------------------------------------------------------------------------- bad shapes, no 500


def test_bad_context_is_400(app_client):
    for ctx in ({}, {"patientId": ""}, {"patientId": 7}):
        req = patient_view(PATIENT)
        req["context"] = ctx
        r = app_client.post(URL, json=req)
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    wrong_hook = patient_view(PATIENT)
    wrong_hook["hook"] = "order-sign"
    assert app_client.post(URL, json=wrong_hook).status_code == 400


def test_odd_shapes_never_500(app_client):
    d0 = today() - timedelta(days=9)
    resources = C8.resources(PATIENT)
    odd = [
        {**resources[-1], "id": "no-effective", "effectiveDateTime": None},  # no effective[x]
        {**resources[-1], "id": "odd-unit", "valueQuantity": {"value": 3, "unit": "furlongs"}},
        {**resources[-1], "id": "censored-string", "valueString": "<0.1", "valueQuantity": None},
        {"resourceType": "Observation"},
        "not a resource",
    ]
    undated = medication("MedicationAdministration", "undated", PATIENT, AXI_CEL, "Yescarta", None)
    # Another product (a further dose of the same one within 14 days would belong to the first course).
    second = medication("MedicationAdministration", "second", PATIENT, "2594780", "Carvykti", at(d0, 3, 14))
    pre = full_prefetch(resources)
    pre["anc"]["entry"] += [{"resource": o} for o in odd]
    pre[INFUSION_KEY]["entry"] += [{"resource": undated}, {"resource": second}, {"resource": None}, {}]
    r = post(app_client, prefetch=pre)
    assert r.status_code == 200, r.text
    assert card_violations(r.json()) == []
    course = course_of(r)
    assert "infusion-without-date" in course["flags"]
    # Two infusions: the course is the one that contains today (the second: its day 0 is the first's day 3).
    assert course["day0"] == (d0 + timedelta(days=3)).isoformat() and course["day"] == 6
    assert course["currentSevereRun"] == {"min": 7, "max": 7}  # the first course's days 3–9: F2 applies
    for junk in ({INFUSION_KEY: "nonsense"}, {INFUSION_KEY: {"resourceType": "Bundle", "entry": "x"}}, {"x": 1}):
        r = post(app_client, prefetch=junk)
        assert r.status_code in (200, 412), r.text
        assert r.json().get("resourceType") == "OperationOutcome" or r.json() == {"cards": []}


# -------------------------------------------------------------------------------------------- drafts


def test_drafts_only_for_site_configured_drugs(tmp_path):
    drugs = {
        "fluoroquinolone": {"rxnorm": "82122", "display": "levofloxacin 500 mg", "dose": "500 mg orally daily"},
        "azole": {"rxnorm": "4450", "display": "fluconazole 400 mg", "dose": "400 mg orally daily"},
    }
    settings = dev_settings(follow_up={"drugs": drugs}, feedback={"sqlite_path": str(tmp_path / "f.sqlite3")})
    with TestClient(create_app(settings)) as c:
        card = the_card(c.post(URL, json=patient_view("pt-d", prefetch=full_prefetch(C2.resources("pt-d")))))
    labels = [s["label"] for s in card["suggestions"]]
    assert labels == [
        "Order levofloxacin 500 mg: Antibacterial prophylaxis (ANC <500/µL, HT-high)",
        "Order fluconazole 400 mg: Antifungal prophylaxis (prolonged severe neutropenia)",
    ]  # F3 is text; F4 has no configured G-CSF (the shipped default is not a site choice)
    assert card["selectionBehavior"] == "any"
    mr = card["suggestions"][0]["actions"][0]["resource"]
    assert mr["resourceType"] == "MedicationRequest" and mr["subject"] == {"reference": "Patient/pt-d"}
    assert mr["status"] == "draft" and mr["medicationCodeableConcept"]["coding"][0]["code"] == "82122"


def test_no_configured_drugs_no_drug_drafts_and_cbc_draft_for_f5(app_client):
    card = the_card(post(app_client, "pt-c2", prefetch=full_prefetch(C2.resources("pt-c2"))))
    assert "suggestions" not in card and "selectionBehavior" not in card
    from tests.course_data import C7B

    card = the_card(post(app_client, "pt-c7", prefetch=full_prefetch(C7B.resources("pt-c7"))))
    (s,) = card["suggestions"]
    sr = s["actions"][0]["resource"]
    assert sr["resourceType"] == "ServiceRequest" and sr["code"]["coding"][0]["code"] == "57021-8"
    assert s["isRecommended"] is False  # F5 is our extrapolation (X)
    assert card["indicator"] == "info"


def test_gcsf_ordered_before_day_0_suppresses_f4_but_a_cancelled_order_does_not(app_client):
    base = Course("gc", 5, anc=daily(0, 5, 0.3))
    d0 = base.day0()
    for status, expect_f4 in (("active", False), ("cancelled", True), ("entered-in-error", True)):
        order = medication("MedicationRequest", "g", "pt-gc", FILGRASTIM, "filgrastim", at(d0, -2, 9), status=status)
        resources = [*base.resources("pt-gc"), order]
        c = course_of(post(app_client, "pt-gc", prefetch=full_prefetch(resources)))
        assert ("F4" in c["items"]) is expect_f4, status
    old = medication("MedicationRequest", "g", "pt-gc", FILGRASTIM, "Neupogen", at(d0, -20, 9), status="active")
    c = course_of(post(app_client, "pt-gc", prefetch=full_prefetch([*base.resources("pt-gc"), old])))
    assert "F4" in c["items"]  # authored before day −14: an earlier treatment


# ---------------------------------------------------------------------- the item rules and the budget


def _result(day: int, run: Interval, anc: tuple[int, str] | None) -> CourseResult:
    d0 = today() - timedelta(days=day)
    from datetime import UTC, datetime, time

    when = datetime.combine(d0, time(14), UTC)
    infusion = Infusion("MedicationAdministration/x", "axicabtagene ciloleucel", when, False, d0)
    course = ClinicalCourse(infusion, 0, d0, d0 + timedelta(days=100))
    latest = {}
    if anc is not None:
        aday, value = anc
        comparator = value[0] if value[0] in "<>" else None
        r = LabResult("anc", 0, Decimal(value.lstrip("<>")), comparator, when, False, False, "Observation/a")
        latest["anc"] = Latest(r, aday, d0 + timedelta(days=aday))
    unknown = "unknown"
    measures = Measures(Interval(run.min, 61), *([unknown] * 11), None, None)  # type: ignore[arg-type]
    return CourseResult(
        course, today(), day, True, measures, Phenotype(None, ("aplastic", "quick"), False), run, latest, (), {}
    )


@pytest.mark.parametrize(
    ("day", "run", "anc", "group", "gcsf", "items"),
    [
        (9, Interval(10, 10), (9, "0.3"), "high", True, ["F1", "F2"]),  # C8
        (9, Interval(10, 10), (7, "0.3"), "high", True, ["F1", "F2"]),  # collected 2 days before: still F1
        (9, Interval(10, 12), (6, "0.3"), "high", True, ["F2"]),  # 3 days old: not F1
        (9, Interval(0, 0), (9, "<1.0"), "high", True, []),  # "<1.0" is not surely < 0.5
        (9, Interval(0, 0), (9, "<0.1"), "high", True, ["F1"]),
        (9, Interval(6, 6), (9, "0.3"), "low", True, []),  # F1 is HT-high only; run 6 < 7
        (15, Interval(14, 14), (15, "0.2"), "low", True, ["F2", "F3"]),
        (1, Interval(0, 0), (1, "2.0"), "high", False, []),  # F4 from day +2
        (2, Interval(0, 0), (2, "2.0"), "high", False, ["F4"]),
        (31, Interval(0, 0), (25, "2.0"), "high", False, []),  # F4 to day +30; 6 days ≤ 8
        (31, Interval(0, 0), (22, "2.0"), "high", False, ["F5"]),  # 9 days > 8
        (20, Interval(0, 0), (13, "2.0"), "low", False, []),  # 7 days, not more than 7
        (20, Interval(0, 0), (12, "2.0"), "low", False, ["F5"]),
        (40, Interval(0, 0), None, "low", False, []),  # HT-low: no reminder after day +30
        (5, Interval(0, 0), None, "indeterminate", False, ["F5"]),  # no ANC at all: due (HT-high interval)
        (95, Interval(0, 0), None, "high", False, []),  # no reminder after day +90
    ],
)
def test_applicable_items(day, run, anc, group, gcsf, items):
    got = applicable_items(_result(day, run, anc), group, gcsf, FollowUpRules())
    assert [i.id for i in got] == items


def test_indeterminate_as_high_gives_f1_and_f4_as_extrapolation():
    rules = FollowUpRules(indeterminate_as_high=True)
    got = applicable_items(_result(9, Interval(0, 0), (9, "0.3")), "indeterminate", False, rules)
    assert got == [Item("F1", "X"), Item("F4", "X")]
    assert cbc_interval("indeterminate", 10, FollowUpRules()) == 3


def test_items_a_site_switched_off_stay_off():
    result = _result(15, Interval(14, 14), (15, "0.2"))
    assert [i.id for i in applicable_items(result, "high", False, FollowUpRules())] == ["F1", "F2", "F3", "F4"]
    rules = FollowUpRules(disabled=frozenset({"R2", "F3"}))  # by its §4 id or its own
    assert [i.id for i in applicable_items(result, "high", False, rules)] == ["F2", "F4"]


def test_every_item_at_once_fits_the_budget():
    # F5 with F1 needs an interval shorter than 2 days; every flag note as well.
    rules = FollowUpRules(cbc_high_early_days=1)
    result = _result(9, Interval(14, 20), (7, "<0.1"))
    items = applicable_items(result, "high", False, rules)
    assert [i.id for i in items] == ["F1", "F2", "F3", "F4", "F5"]
    vs = value_sets()
    from service.clinical.labs import LabRules

    t0 = result.course.infusion.when - timedelta(days=5)
    trigger = Trigger((), "unknown", None, False, t0, True, False)
    at_ld = assess_patient(trigger, [], "p", vs, LabRules(tz=t0.tzinfo))
    ld = LdStart(t0, t0.isoformat(), False, "assumed", None, frozenset(), ("t0-assumed",))
    view = FollowUpView(result, ld, at_ld, items, ("infusion-without-date",), "1.0.0+valuesets.x", rules)
    text = detail(view)
    assert len(text) <= DETAIL_MAX and not text.endswith("…"), (len(text), text)
    assert len(summary(view)) < 140
