"""The follow-up service end to end against the real FHIR server: C1–C8 with NO prefetch give the same
course as with full prefetch, and a patient who is not in a course costs exactly one search (the
infusions) and no lab query, as the server's own access log shows.

The server is the session's local sekmet-fhir (tests/fhir_server.py); the patients are loaded with one
transaction Bundle under ids unique to this run and deleted at the end of the session.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from cds_hooks.validate import card_violations
from service.cards.follow_up_hook import COURSE_KEYS, INFUSION_KEY
from service.web.app import create_app
from tests.cases import obs
from tests.conftest import dev_settings
from tests.course_data import AXI_CEL, COURSES, Course, at, check_course, full_prefetch, medication, patient_view
from tests.course_data import today as local_today
from tests.fhir_server import FhirTestServer, load_transaction, transaction, unique_id

pytestmark = pytest.mark.integration

URL = "/cds-services/hematotox-follow-up"
# Results but no CAR-T infusion; an infusion 120 days ago (no course today).
NO_CART = "no-cart"
OLD_CART = "old-cart"


def pid(name: str) -> str:
    return unique_id(f"fu-{name.lower()}")


def patient_resource(patient: str) -> dict:
    return {"resourceType": "Patient", "id": patient, "birthDate": "1960-01-01", "gender": "male"}


def others(name: str) -> list[dict]:
    patient = pid(name)
    d0 = local_today() - timedelta(days=120)
    labs = [obs(f"{patient}-anc{d}", "751-8", 0.3, "10*9/L", at(d0, 110 + d, 8), patient=patient) for d in range(5)]
    if name == OLD_CART:
        return [medication("MedicationAdministration", f"{patient}-cart", patient, AXI_CEL, "Yescarta", at(d0, 0, 14))]
    return labs


@pytest.fixture(scope="module")
def loaded(fhir_server: FhirTestServer) -> dict[str, list[dict]]:
    data = {c.name: c.resources(pid(c.name)) for c in COURSES}
    data[NO_CART] = others(NO_CART)
    data[OLD_CART] = others(OLD_CART)
    resources = []
    for name, rs in data.items():
        resources += [patient_resource(pid(name)), *rs]
    load_transaction(fhir_server.base_url, transaction(resources))
    return data


@pytest.fixture(scope="module")
def app_client(fhir_server: FhirTestServer) -> TestClient:
    settings = dev_settings(fhir={"allowed_servers": [fhir_server.base_url], "deadline_seconds": 15.0})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def post(client: TestClient, server: FhirTestServer, patient: str, prefetch: dict | None = None) -> httpx.Response:
    req = patient_view(patient, prefetch=prefetch, fhir_server=server.base_url, token=server.access_token)
    return client.post(URL, json=req)


def course_of(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    assert card_violations(response.json()) == []
    (card,) = response.json()["cards"]
    return card["extension"]["hematotox-cds"]["course"]


def hook_line(caplog) -> dict:
    return [r.event for r in caplog.records if r.name == "hematotox.hook" and r.msg == "hook"][-1]


def server_requests(server: FhirTestServer, patient: str, since: int) -> list[str]:
    """The request lines the server logged for `patient` after byte offset `since` of its log."""
    assert server.log is not None
    with server.log.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return [m.group(1) for m in re.finditer(r'"(?:GET|POST) (/\S+) HTTP', text) if patient in m.group(1)]


def log_size(server: FhirTestServer) -> int:
    return server.log.stat().st_size if server.log else 0


@pytest.mark.parametrize("course", COURSES, ids=[c.name for c in COURSES])
def test_course_without_prefetch_equals_full_prefetch(app_client, fhir_server, loaded, course: Course, caplog):
    patient = pid(course.name)
    with_prefetch = course_of(post(app_client, fhir_server, patient, full_prefetch(loaded[course.name])))
    with caplog.at_level(logging.INFO, logger="hematotox.hook"):
        fetched = course_of(post(app_client, fhir_server, patient))
    check_course(fetched, course.name)
    assert orjson.dumps(fetched, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        with_prefetch, option=orjson.OPT_SORT_KEYS
    )
    line = hook_line(caplog)
    assert line["fhir"]["keysFetched"] == 1 + len(COURSE_KEYS) and line["fhir"]["keysFailed"] == 0


def test_not_in_a_course_costs_one_search_and_no_lab_query(app_client, fhir_server, loaded):
    if fhir_server.log is None:
        pytest.skip("an external FHIR server: its access log is not ours to read")
    for name in (NO_CART, OLD_CART):
        patient = pid(name)
        since = log_size(fhir_server)
        r = post(app_client, fhir_server, patient)
        assert r.status_code == 200 and r.json() == {"cards": []}
        requests = server_requests(fhir_server, patient, since)
        assert len(requests) == 1 and requests[0].startswith("/fhir/MedicationAdministration?"), requests
        assert not [q for q in requests if "/Observation" in q]
        # With the infusion key prefetched, the server hears nothing at all.
        since = log_size(fhir_server)
        prefetch = {INFUSION_KEY: full_prefetch(loaded[name])[INFUSION_KEY]}
        r = post(app_client, fhir_server, patient, prefetch)
        assert r.status_code == 200 and r.json() == {"cards": []}
        assert server_requests(fhir_server, patient, since) == []


def test_course_patient_queries_are_bounded_by_day_0(app_client, fhir_server, loaded):
    if fhir_server.log is None:
        pytest.skip("an external FHIR server: its access log is not ours to read")
    patient = pid("C8")
    since = log_size(fhir_server)
    course_of(post(app_client, fhir_server, patient))
    requests = server_requests(fhir_server, patient, since)
    assert len(requests) == 1 + len(COURSE_KEYS)
    observations = [q for q in requests if q.startswith("/fhir/Observation?")]
    assert len(observations) == 5 and all("date=ge" in q for q in observations)
