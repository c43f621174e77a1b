"""Every way the EHR's FHIR server can fail a hook with no prefetch, through the HTTP layer (respx).

Each fault must end within the configured deadline (plus a little slack for the test client), with
`412` and an OperationOutcome that names the keys and why, and never with a risk card computed from
incomplete lab data (a LOW from half the labs is the one answer that must never happen). The
TestClient talks to the app over its own transport, so respx (which patches httpx's network
transports) only sees the service's FHIR requests; `assert_all_mocked` makes any request outside the
mocked base an error instead of a real network call.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
import respx
from fastapi.testclient import TestClient

from service.cards.order_hooks import prefetch_templates
from service.clinical.valuesets import value_sets
from service.web.app import create_app
from tests.cases import BY_NAME, T0, hook_request, obs, prefetch_for
from tests.conftest import dev_settings
from tests.fake_fhir import FakeFhir, outcome

BASE = "https://ehr.test/fhir"
TOKEN = "at-fault-SECRET-77"
DEADLINE = 0.5
SLACK = 0.3
SIGN = "/cds-services/hematotox-order-sign"
HT_KEYS = ["anc", "crp", "ferritin", "hemoglobin", "platelets"]
PATIENT = "pt-fault"
HUGE = 11 * 1024 * 1024  # over the client's 10 MiB response cap


@pytest.fixture(scope="module")
def app_client() -> TestClient:
    settings = dev_settings(fhir={"allowed_servers": [BASE], "deadline_seconds": DEADLINE, "max_pages": 10})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def fhir() -> respx.MockRouter:
    with respx.mock(base_url=BASE, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def patient_resources(patient: str = PATIENT, case: str = "T1") -> list[dict]:
    return [
        *BY_NAME[case].observations(patient),
        {"resourceType": "Patient", "id": patient, "birthDate": "1960-01-01", "gender": "female"},
    ]


def call(client: TestClient, patient: str = PATIENT, **kwargs) -> tuple[httpx.Response, float]:
    req = hook_request("order-sign", patient, None, fhir_server=BASE, token=TOKEN, **kwargs)
    started = time.monotonic()
    response = client.post(SIGN, json=req)
    return response, time.monotonic() - started


def assert_412(response: httpx.Response, elapsed: float, keys: list[str], code: str) -> dict:
    assert elapsed < DEADLINE + SLACK, f"took {elapsed:.3f}s"
    assert response.status_code == 412, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and "cards" not in body  # no card at all: never a LOW
    named = {}
    for issue in body["issue"]:
        assert issue["severity"] == "error"
        key = issue["diagnostics"].split("'")[1]
        named[key] = issue
        assert issue["diagnostics"].startswith(f"prefetch '{key}' unavailable: ")
    assert sorted(named) == sorted(keys)
    assert {i["code"] for i in named.values()} == {code}, body
    assert TOKEN not in response.text and PATIENT not in response.text
    return body


_CODE_PARAMS = {
    parse_qs(t.split("?", 1)[1])["code"][0]: key for key, t in prefetch_templates(value_sets()).items() if "code=" in t
}


def key_of(request: httpx.Request) -> str:
    """Which prefetch key of ours a request to the FHIR server runs."""
    if "/Patient/" in request.url.path:
        return "patient"
    if request.url.path.endswith("/Condition"):
        return "conditions"
    if request.url.path.endswith("/MedicationRequest"):
        return "medications"
    return _CODE_PARAMS.get(request.url.params.get("code", ""), "?")


ALL_KEYS = set(prefetch_templates(value_sets()))


def for_keys(
    keys: set[str],
    effect: object,
    otherwise: Callable[[httpx.Request], httpx.Response] | None = None,
    seen: list[httpx.Request] | None = None,
):
    """A respx side effect: `effect` for requests of `keys`, `otherwise` for the rest; requests go to
    `seen` when they arrive (respx records a call only once it is answered, a timed-out one never)."""

    async def dispatch(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        # A network round trip yields to the event loop; a mock answers at once unless told to. Without
        # this, each key's task could page to its end before the next task sends anything, and on a loaded
        # machine the deadline came before the last key was asked (CI of 2026-12-02, `endless-next`).
        await asyncio.sleep(0)
        if key_of(request) not in keys:
            assert otherwise is not None
            return otherwise(request)
        if isinstance(effect, Exception):
            raise effect
        result = effect(request)  # type: ignore[operator]
        return await result if inspect.isawaitable(result) else result

    return dispatch


def risk_ext(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    cards = [c for c in response.json()["cards"] if "hematotox" in c.get("extension", {}).get("hematotox-cds", {})]
    assert len(cards) == 1
    return cards[0]["extension"]["hematotox-cds"]


# ------------------------------------------------------------------------------------- faults


async def _slow(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(5)
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})


def _looping(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [],
            "link": [{"relation": "next", "url": str(request.url)}],
        },
    )


def _endless(request: httpx.Request) -> httpx.Response:
    # Distinct next links forever (a broken cursor): ends at the page cap, not in a loop check.
    page = int(request.url.params.get("page", "0"))
    next_url = request.url.copy_set_param("page", str(page + 1))
    return httpx.Response(
        200,
        json={
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [],
            "link": [{"relation": "next", "url": str(next_url)}],
        },
    )


_HUGE_BODY = b'{"resourceType":"Bundle","type":"searchset","entry":[' + b" " * HUGE + b"]}"


def _huge_streamed(request: httpx.Request) -> httpx.Response:
    async def chunks():
        yield b'{"resourceType":"Bundle","type":"searchset","entry":['
        for _ in range(HUGE // (1 << 20)):
            yield b" " * (1 << 20)
        yield b"]}"

    return httpx.Response(200, stream=_AsyncStream(chunks()), headers={"content-type": "application/fhir+json"})


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(self, gen) -> None:
        self.gen = gen

    async def __aiter__(self):
        async for chunk in self.gen:
            yield chunk


def _respond(status: int, **kwargs) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, **kwargs)


FAULTS: dict[str, tuple[object, str]] = {
    "timeout": (_slow, "timeout"),
    "httpx-read-timeout": (httpx.ReadTimeout("read timed out"), "timeout"),
    "connection-refused": (httpx.ConnectError("connection refused"), "transient"),
    "401": (_respond(401, json=outcome("login")), "login"),
    "403": (_respond(403, json=outcome("forbidden")), "forbidden"),
    "404-on-search": (_respond(404, json=outcome("not-found")), "not-found"),
    "500": (_respond(500, json=outcome("exception")), "exception"),
    "malformed-json": (
        _respond(
            200, content=b'{"resourceType": "Bundle", "entry": [', headers={"content-type": "application/fhir+json"}
        ),
        "structure",
    ),
    "html-error-page": (
        _respond(502, content=b"<html><body>Bad Gateway</body></html>", headers={"content-type": "text/html"}),
        "exception",
    ),
    "html-page-with-200": (
        _respond(200, content=b"<!doctype html><title>Login</title>", headers={"content-type": "text/html"}),
        "structure",
    ),
    "operation-outcome-with-200": (_respond(200, json=outcome("too-costly")), "exception"),
    "next-loop": (_looping, "incomplete"),
    "endless-next": (_endless, "incomplete"),
    "huge-bundle-declared": (
        _respond(200, content=_HUGE_BODY, headers={"content-type": "application/fhir+json"}),
        "structure",
    ),
    "huge-bundle-streamed": (_huge_streamed, "structure"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_on_every_query_is_412_within_the_deadline(app_client, fhir, fault):
    effect, code = FAULTS[fault]
    seen: list[httpx.Request] = []
    fhir.route().mock(side_effect=for_keys(ALL_KEYS, effect, seen=seen))
    response, elapsed = call(app_client)
    assert_412(response, elapsed, HT_KEYS, code)
    assert {key_of(r) for r in seen} == ALL_KEYS  # every key was asked for, in parallel
    for request in seen:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("fault", ["timeout", "500", "malformed-json", "next-loop", "404-on-search"])
def test_fault_on_one_lab_key_fails_the_hook_not_just_that_lab(app_client, fhir, fault):
    """Platelets unavailable while every other lab is normal: a LOW is right there for the taking."""
    effect, code = FAULTS[fault]
    server = FakeFhir(BASE, patient_resources(), token=TOKEN)
    fhir.route().mock(side_effect=for_keys({"platelets"}, effect, server))
    response, elapsed = call(app_client)
    assert_412(response, elapsed, ["platelets"], code)


def test_server_that_caps_its_page_size_gives_412_not_a_low_from_the_first_pages(app_client, fhir):
    """Thirty recent hemoglobin results, two per page: eleven pages needed, ten allowed."""
    resources = patient_resources()
    resources += [
        obs(f"hb-extra-{i}", "718-7", 12.0, "g/dL", f"2024-03-{9 - i // 5:02d}T0{i % 5}:00:00+00:00", patient=PATIENT)
        for i in range(30)
    ]
    server = FakeFhir(BASE, resources, token=TOKEN, max_page_size=2)
    fhir.route().mock(side_effect=server)
    response, elapsed = call(app_client)
    body = assert_412(response, elapsed, ["hemoglobin"], "incomplete")
    assert "more than 10 pages" in body["issue"][0]["diagnostics"]


def test_lookback_stop_ends_paging_of_a_non_ht_key(app_client, fhir, caplog):
    """One LDH every 3 days for 120 days, two per page: paging stops past T0 − 30 days."""
    resources = patient_resources()
    days = range(1, 121, 3)
    resources += [
        obs(f"ldh-{d}", "2532-0", 400 if d == 1 else 250, "U/L", (_t0() - _days(d)).isoformat(), patient=PATIENT)
        for d in days
    ]
    server = FakeFhir(BASE, resources, token=TOKEN, max_page_size=2)
    fhir.route().mock(side_effect=server)
    with caplog.at_level("INFO", logger="hematotox.hook"):
        response, _elapsed = call(app_client)
    ext = risk_ext(response)
    ldh_pages = [r for r in server.searches("Observation") if "2532-0" in r.url.params["code"]]
    # Results at T0-1, -4, ..., the first older than T0-32 days is T0-34 (the 12th): page 6. Not all 20 pages.
    assert len(ldh_pages) == 6
    line = next(r.event for r in caplog.records if r.name == "hematotox.hook" and r.msg == "hook")
    assert line["fhir"]["stoppedEarly"] >= 1
    # The same answer as with every result in the prefetch.
    full = hook_request(
        "order-sign",
        PATIENT,
        None,
        prefetch=prefetch_for([r for r in resources if r["resourceType"] == "Observation"], PATIENT),
    )
    assert _strip(risk_ext(app_client.post(SIGN, json=full))) == _strip(ext)


def test_ht_keys_are_read_to_the_end_for_results_with_only_issued(app_client, fhir):
    """Servers sort results without effective[x] last; the newest platelet count may be one of them
    (spec §1.5: use `issued`). Stopping at the lookback would have given a wrong LOW."""
    resources = [r for r in patient_resources() if r["id"] != f"{PATIENT}-plt"]
    resources += [
        obs(f"plt-{d}", "777-3", 250, "10*9/L", (_t0() - _days(d)).isoformat(), patient=PATIENT) for d in range(1, 61)
    ]
    late = obs("plt-issued", "777-3", 50, "10*9/L", patient=PATIENT)
    del late["effectiveDateTime"]
    late["issued"] = (_t0() - _days(0.25)).isoformat()
    resources.append(late)
    server = FakeFhir(BASE, resources, token=TOKEN, max_page_size=10)
    fhir.route().mock(side_effect=server)
    response, _ = call(app_client)
    ext = risk_ext(response)
    assert ext["hematotox"]["confirmed"]["group"] == "high"
    plt = next(c for c in ext["hematotox"]["components"] if c["analyte"] == "platelets")
    assert plt["observation"] == "Observation/plt-issued" and "timing-imprecise:platelets" in ext["hematotox"]["flags"]


def test_patient_read_404_means_absent_not_an_error(app_client, fhir):
    resources = [r for r in patient_resources() if r["resourceType"] != "Patient"]
    fhir.route().mock(side_effect=FakeFhir(BASE, resources, token=TOKEN))
    response, elapsed = call(app_client)
    ext = risk_ext(response)
    assert elapsed < DEADLINE + SLACK
    assert ext["hematotox"]["confirmed"]["group"] == "low"  # every lab is there: a true LOW
    assert ext["nrm"]["age"] is None  # no Patient: age cannot be told


@pytest.mark.parametrize("fault", ["timeout", "500", "401", "malformed-json"])
def test_fault_on_optional_keys_only_still_answers(app_client, fhir, fault):
    """LDH, creatinine, ECOG, Patient and Conditions are not needed for the score: 'cannot tell'."""
    effect, _ = FAULTS[fault]
    server = FakeFhir(BASE, patient_resources(), token=TOKEN)
    optional = {"ldh", "creatinine", "ecog", "patient", "conditions"}
    fhir.route().mock(side_effect=for_keys(optional, effect, server))
    response, elapsed = call(app_client)
    ext = risk_ext(response)
    assert elapsed < DEADLINE + SLACK
    assert ext["hematotox"]["confirmed"]["group"] == "low"
    assert ext["nrm"]["diabetes"] is None  # the Conditions search failed: cannot tell, not "no"


def test_no_fhir_server_and_no_prefetch_is_412_naming_the_keys(app_client, fhir):
    req = hook_request("order-sign", PATIENT, None)
    response = app_client.post(SIGN, json=req)
    body = assert_412(response, 0.0, HT_KEYS, "required")
    assert "no fhirServer" in body["issue"][0]["diagnostics"]
    assert not fhir.calls


def test_partial_prefetch_fetches_only_what_is_lacking(app_client, fhir):
    server = FakeFhir(BASE, patient_resources(), token=TOKEN)
    fhir.route().mock(side_effect=server)
    observations = BY_NAME["T1"].observations(PATIENT)
    prefetch = prefetch_for(observations, PATIENT)
    for key in ("platelets", "patient"):
        del prefetch[key]
    prefetch["crp"] = outcome("exception")  # the client tried and failed
    response, _ = call(app_client, prefetch=prefetch)
    assert risk_ext(response)["hematotox"]["confirmed"]["group"] == "low"
    # prefetch_for sends every key; only the removed and the failed ones are fetched
    assert sorted(map(key_of, server.requests)) == ["crp", "patient", "platelets"]


def _t0():
    from datetime import datetime

    return datetime.fromisoformat(T0)


def _days(n: int):
    from datetime import timedelta

    return timedelta(days=n)


def _strip(ext: dict) -> bytes:
    return orjson.dumps(ext, option=orjson.OPT_SORT_KEYS)
