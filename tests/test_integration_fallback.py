"""End to end against a real FHIR server: every worked case with NO prefetch gives the same risk card
as with full prefetch, and partial, `null`, OperationOutcome and paginated prefetch do too.

The server is the session's local sekmet-fhir (or FHIR_BASE_URL); all patients are loaded with one
transaction Bundle under ids unique to this run. The app runs in-process (TestClient) with the
server's base URL on its `fhir.allowed_servers`; each hook carries `fhirServer` and the server's
bearer token in `fhirAuthorization`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from cds_hooks.fhir_client import FhirClient
from cds_hooks.prefetch import PrefetchUnavailable, resolve
from service.cards.order_hooks import prefetch_templates
from service.clinical.labs import LabRules
from service.clinical.valuesets import value_sets
from service.web.app import create_app
from service.web.paging import lookback_stop
from tests.cases import BY_NAME, CASES, T0, Case, hook_request, obs, prefetch_for, searchset
from tests.conftest import dev_settings
from tests.fhir_server import FhirTestServer, load_transaction, transaction, unique_id
from tests.test_worked_cases import check_case

pytestmark = pytest.mark.integration

SIGN = "/cds-services/hematotox-order-sign"
HT_KEYS = ["anc", "crp", "ferritin", "hemoglobin", "platelets"]
EMPTY_KEYS = ("ldh", "creatinine", "ecog", "conditions")  # nothing of these is loaded for any patient
T0_DT = datetime.fromisoformat(T0)
TEMPLATES = prefetch_templates(value_sets())


def pid(name: str) -> str:
    return unique_id(f"ht-{name.lower()}")


def patient_resource(patient: str) -> dict:
    # Exactly what tests.cases.prefetch_for sends as the `patient` key.
    return {"resourceType": "Patient", "id": patient, "birthDate": "1960-01-01", "gender": "female"}


# Hemoglobin drawn at these days before T0 (newest first), for the paging tests.
HB_DAYS = (1, 3, 6, 10, 20, 40, 60)
HB_VALUES = (8.8, 9.5, 10.0, 11.0, 12.0, 13.0, 14.0)


def paging_observations(patient: str) -> list[dict]:
    hbs = [
        obs(f"{patient}-hb{d}", "718-7", v, "g/dL", (T0_DT - timedelta(days=d)).isoformat(), patient=patient)
        for d, v in zip(HB_DAYS, HB_VALUES, strict=False)
    ]
    others = [o for o in BY_NAME["T1"].observations(patient) if o["code"]["coding"][0]["code"] != "718-7"]
    return hbs + others


@pytest.fixture(scope="module")
def loaded(fhir_server: FhirTestServer) -> dict[str, list[dict]]:
    """Every case's patient and observations (and the paging patient), in ONE transaction Bundle."""
    data: dict[str, list[dict]] = {case.name: case.observations(pid(case.name)) for case in CASES}
    data["paging"] = paging_observations(pid("paging"))
    resources = []
    for name, observations in data.items():
        resources += [patient_resource(pid(name)), *observations]
    started = time.monotonic()
    load_transaction(fhir_server.base_url, transaction(resources))
    elapsed = time.monotonic() - started
    if not fhir_server.external:
        assert elapsed < 10, f"loading {len(resources)} resources took {elapsed:.1f}s"
    return data


@pytest.fixture(scope="module")
def app_client(fhir_server: FhirTestServer) -> TestClient:
    settings = dev_settings(fhir={"allowed_servers": [fhir_server.base_url], "deadline_seconds": 15.0})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def full_prefetch(observations: list[dict], patient: str) -> dict:
    prefetch = prefetch_for(observations, patient)
    prefetch["ecog"] = searchset([])  # every key answered, so nothing is fetched
    return prefetch


def post(
    client: TestClient, server: FhirTestServer, patient: str, prefetch: dict | None = None, token: str | None = "server"
) -> httpx.Response:
    token = server.access_token if token == "server" else token
    req = hook_request("order-sign", patient, None, prefetch=prefetch, fhir_server=server.base_url, token=token)
    if token is None:
        del req["fhirAuthorization"]
    return client.post(SIGN, json=req)


def risk_extension(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    cards = [c for c in response.json()["cards"] if "hematotox" in c.get("extension", {}).get("hematotox-cds", {})]
    assert len(cards) == 1
    return cards[0]["extension"]["hematotox-cds"]


def hook_line(caplog) -> dict:
    (line,) = [r.event for r in caplog.records if r.name == "hematotox.hook" and r.msg == "hook"]
    return line


def same(a: dict, b: dict) -> None:
    """The two risk-card extensions are identical (observation ids included; uuids are not in there)."""
    assert orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(b, option=orjson.OPT_SORT_KEYS)


@pytest.fixture(scope="module")
def with_prefetch(app_client, fhir_server, loaded) -> dict[str, dict]:
    """Each case's risk extension with full prefetch (no request to the FHIR server)."""
    return {
        name: risk_extension(post(app_client, fhir_server, pid(name), full_prefetch(obs_, pid(name))))
        for name, obs_ in loaded.items()
    }


# ------------------------------------------------------------------------------ T1–T39 with no prefetch


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_worked_case_without_prefetch_equals_full_prefetch(
    app_client, fhir_server, loaded, with_prefetch, case: Case, caplog
):
    with caplog.at_level(logging.INFO, logger="hematotox.hook"):
        ext = risk_extension(post(app_client, fhir_server, pid(case.name)))
    check_case(ext, case)
    same(ext, with_prefetch[case.name])
    line = hook_line(caplog)
    assert line["fhir"]["keysFetched"] == len(TEMPLATES) and line["fhir"]["keysFailed"] == 0


def test_full_prefetch_did_not_touch_the_server(app_client, fhir_server, loaded, caplog):
    patient = pid("T9")
    with caplog.at_level(logging.INFO, logger="hematotox.hook"):
        risk_extension(post(app_client, fhir_server, patient, full_prefetch(loaded["T9"], patient)))
    line = hook_line(caplog)
    assert line["fhir"]["keysFetched"] == 0


# ------------------------------------------------------------------------------ mixed prefetch states


@pytest.mark.parametrize("name", ["T9", "T22", "T27", "T31", "T35"])
def test_partial_prefetch_equals_full_prefetch(app_client, fhir_server, loaded, with_prefetch, name):
    patient = pid(name)
    prefetch = full_prefetch(loaded[name], patient)
    for key in ("platelets", "ferritin", "patient", "conditions"):
        del prefetch[key]
    same(risk_extension(post(app_client, fhir_server, patient, prefetch)), with_prefetch[name])


def test_null_for_what_the_server_has_nothing_of_equals_full_prefetch(app_client, fhir_server, loaded, with_prefetch):
    patient = pid("T20")
    prefetch = dict.fromkeys(EMPTY_KEYS)  # the labs and the patient come from the server
    same(risk_extension(post(app_client, fhir_server, patient, prefetch)), with_prefetch["T20"])


def test_null_is_believed_not_refetched(app_client, fhir_server, loaded):
    """`null` = the client looked and found nothing: ferritin is missing although the server has one."""
    patient = pid("T1")
    ext = risk_extension(post(app_client, fhir_server, patient, {"ferritin": None}))
    ferritin = next(c for c in ext["hematotox"]["components"] if c["analyte"] == "ferritin")
    assert ferritin["status"] == "missing"
    # 0..2 points unknown: never LOW (the server's ferritin of 300 would have made it LOW).
    assert ext["hematotox"]["confirmed"]["group"] == "indeterminate"


def test_operation_outcome_in_every_slot_is_fetched(app_client, fhir_server, loaded, with_prefetch):
    patient = pid("T19")
    failed = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    prefetch = dict.fromkeys(TEMPLATES, failed)
    same(risk_extension(post(app_client, fhir_server, patient, prefetch)), with_prefetch["T19"])


# ------------------------------------------------------------------------------ paging


def first_page(server: FhirTestServer, patient: str, key: str, count: int) -> dict:
    """The first page of a key's search, straight from the real server: its `next` link is the server's."""
    query = TEMPLATES[key].replace("{{context.patientId}}", patient).replace("_count=50", f"_count={count}")
    response = httpx.get(f"{server.base_url}/{query}", headers=server.headers(), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_paginated_prefetch_is_continued_on_the_real_server(app_client, fhir_server, loaded, with_prefetch, caplog):
    patient = pid("paging")
    page = first_page(fhir_server, patient, "hemoglobin", 2)
    assert [link["relation"] for link in page["link"]].count("next") == 1 and len(page["entry"]) == 2
    prefetch = full_prefetch(loaded["paging"], patient)
    prefetch["hemoglobin"] = page
    with caplog.at_level(logging.INFO, logger="hematotox.hook"):
        ext = risk_extension(post(app_client, fhir_server, patient, prefetch))
    same(ext, with_prefetch["paging"])
    line = hook_line(caplog)
    # Pages of 2 from the server's own next links: T0-6, -10 | -20, -40 | the rest. An HT key is read
    # to the end (results with only `issued` sort last), so no early stop.
    assert line["fhir"]["keysFetched"] == 1 and line["fhir"]["pages"] >= 2 and line["fhir"]["stoppedEarly"] == 0
    hb = next(c for c in ext["hematotox"]["components"] if c["analyte"] == "hemoglobin")
    assert hb["points"] == {"min": 1, "max": 1}  # 8.8 g/dL, the newest


def test_no_prefetch_paging_patient_equals_full_prefetch(app_client, fhir_server, loaded, with_prefetch):
    same(risk_extension(post(app_client, fhir_server, pid("paging"))), with_prefetch["paging"])


def _resolve_small_pages(server: FhirTestServer, patient: str, *, max_pages: int, stop=None):
    templates = {"hemoglobin": TEMPLATES["hemoglobin"].replace("_count=50", "_count=1")}

    async def go():
        async with FhirClient() as client:
            return await resolve(
                templates,
                {"patientId": patient},
                None,
                client,
                server.base_url,
                server.access_token,
                time.monotonic() + 30,
                max_pages=max_pages,
                stop_paging=stop,
            )

    return asyncio.run(go())


def test_real_server_paging_over_the_cap_fails_and_the_lookback_stop_ends_it(fhir_server, loaded):
    """One result per page (_count=1), seven results: seven pages."""
    patient = pid("paging")
    complete = _resolve_small_pages(fhir_server, patient, max_pages=10)
    assert [r["id"] for r in complete["hemoglobin"]] == [f"{patient}-hb{d}" for d in HB_DAYS]
    assert complete.meta["hemoglobin"].pages == 7
    with pytest.raises(PrefetchUnavailable) as info:
        _resolve_small_pages(fhir_server, patient, max_pages=6)
    assert info.value.failures["hemoglobin"].code == "incomplete"
    # With the service's stop: the 6th result (T0-40 days) is the first past T0-32 days, so the
    # 7th page is never asked for, and the same cap of 6 is no longer exceeded.
    stop = lookback_stop(T0_DT, LabRules(tz=T0_DT.tzinfo, lookback_days=30), patient, ["hemoglobin"])
    stopped = _resolve_small_pages(fhir_server, patient, max_pages=6, stop=stop)
    assert stopped.meta["hemoglobin"].pages == 6 and stopped.meta["hemoglobin"].stopped
    assert [r["id"] for r in stopped["hemoglobin"]] == [f"{patient}-hb{d}" for d in HB_DAYS[:6]]


# ------------------------------------------------------------------------------ auth


@pytest.mark.parametrize("token", ["not-the-token", None], ids=["wrong-token", "no-token"])
def test_wrong_or_no_token_is_412_naming_the_keys_and_login(app_client, fhir_server, loaded, token):
    if not fhir_server.access_token:
        pytest.skip("this FHIR server was given no access token, so it cannot be shown to check one")
    response = post(app_client, fhir_server, pid("T1"), token=token)
    assert response.status_code == 412, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and "cards" not in body
    named = {i["diagnostics"].split("'")[1]: i for i in body["issue"]}
    assert sorted(named) == HT_KEYS
    for issue in named.values():
        assert issue["code"] in ("login", "forbidden")
        assert "HTTP 401" in issue["diagnostics"] or "HTTP 403" in issue["diagnostics"]
    if token:
        assert token not in response.text
    assert fhir_server.access_token not in response.text
