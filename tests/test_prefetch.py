"""Prefetch templates, key states and resolution against a mocked FHIR server."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import respx

from cds_hooks.fhir_client import FhirClient
from cds_hooks.prefetch import ABSENT, KeyState, PrefetchUnavailable, Resolved, classify, render, resolve

BASE = "https://ehr.test/fhir"
TOKEN = "at-SECRET-42"
CONTEXT = {"patientId": "pat1", "userId": "Practitioner/doc7", "encounterId": "enc9"}


def outcome(code: str) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code}]}


def obs(oid: str) -> dict:
    return {"resourceType": "Observation", "id": oid}


def searchset(*ids: str, next_url: str | None = None, warning: dict | None = None) -> dict:
    entries = [{"resource": obs(i), "search": {"mode": "match"}} for i in ids]
    if warning:
        entries.append({"resource": warning, "search": {"mode": "outcome"}})
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


# ---------------------------------------------------------------- render


def test_render_context_and_user_tokens():
    assert render("Observation?patient={{context.patientId}}&encounter={{ context.encounterId }}", CONTEXT) == (
        "Observation?patient=pat1&encounter=enc9"
    )
    assert render("Practitioner/{{userPractitionerId}}", CONTEXT) == "Practitioner/doc7"
    assert render("Practitioner/{{userPractitionerId}}", CONTEXT, user_practitioner_id="other") == "Practitioner/other"
    assert render("Patient/{{userPatientId}}", {"userId": "Patient/p5"}) == "Patient/p5"
    assert render("PractitionerRole/{{userPractitionerRoleId}}", {"userId": "PractitionerRole/r1"}) == (
        "PractitionerRole/r1"
    )
    assert render("X/{{userPractitionerId}}", {"userId": "https://ehr.test/fhir/Practitioner/d2"}) == "X/d2"
    assert render("Observation?_count=5", {}) == "Observation?_count=5"


def test_render_nested_context_and_lists():
    context = {"order": {"id": "mr 1"}, "ids": ["a", "b/c"], "n": 3}
    assert render("X?o={{context.order.id}}&i={{context.ids}}&n={{context.n}}", context) == "X?o=mr%201&i=a,b%2Fc&n=3"


@pytest.mark.parametrize(
    ("patient_id", "expected"),
    [
        ("p1&code=x", "Observation?patient=p1%26code%3Dx&code=a"),
        ("../Patient", "Observation?patient=..%2FPatient&code=a"),
        ("a,b", "Observation?patient=a%2Cb&code=a"),
        ("sys|code", "Observation?patient=sys%7Ccode&code=a"),
        ("x#frag?y", "Observation?patient=x%23frag%3Fy&code=a"),
        ("{{context.userId}}", "Observation?patient=%7B%7Bcontext.userId%7D%7D&code=a"),
        ("é ü", "Observation?patient=%C3%A9%20%C3%BC&code=a"),
    ],
)
def test_render_encodes_hostile_ids(patient_id, expected):
    assert render("Observation?patient={{context.patientId}}&code=a", {"patientId": patient_id}) == expected


@pytest.mark.parametrize(
    ("template", "context"),
    [
        ("Observation?patient={{context.patientId}}", {}),
        ("Observation?patient={{context.patientId}}", {"patientId": ""}),
        ("Observation?patient={{context.patientId}}", {"patientId": None}),
        ("Observation?patient={{context.patientId}}", {"patientId": {"id": "x"}}),
        ("Observation?patient={{context.patientId}}", {"patientId": True}),
        ("Observation?patient={{context.patient.id}}", {"patient": "p1"}),
        ("Observation?ids={{context.ids}}", {"ids": []}),
        ("Observation?ids={{context.ids}}", {"ids": ["a", ""]}),
        ("Practitioner/{{userPractitionerId}}", {"userId": "Patient/p1"}),
        ("Practitioner/{{userPractitionerId}}", {}),
        ("Observation?date=ge{{today() - 90 days}}", CONTEXT),
        ("Observation?x={{unknownToken}}", CONTEXT),
    ],
)
def test_render_unresolvable_is_none(template, context):
    assert render(template, context) is None


# ---------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("value", "state"),
    [
        (ABSENT, KeyState.MISSING),
        (None, KeyState.NULL),
        (obs("o1"), KeyState.PRESENT),
        (searchset("o1"), KeyState.PRESENT),
        (searchset(), KeyState.PRESENT),
        ({"resourceType": "Bundle", "entry": []}, KeyState.PRESENT),  # the sandbox sends no type
        (searchset("o1", next_url=f"{BASE}/Observation?page=2"), KeyState.PAGINATED),
        (outcome("exception"), KeyState.FAILED),
        ({"issue": []}, KeyState.FAILED),
        ("Observation/o1", KeyState.FAILED),
        ([obs("o1")], KeyState.FAILED),
    ],
)
def test_classify(value, state):
    assert classify(value) is state


# ---------------------------------------------------------------- resolve

TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "present": "Observation?patient={{context.patientId}}&code=a",
    "null": "Observation?patient={{context.patientId}}&code=b",
    "missing": "Observation?patient={{context.patientId}}&code=c",
    "failed": "Observation?patient={{context.patientId}}&code=d",
    "paged": "Observation?patient={{context.patientId}}&code=e",
}


def run_resolve(
    prefetch: dict | None,
    *,
    templates: dict = TEMPLATES,
    fhir_server: str | None = BASE,
    client: bool = True,
    deadline: float = 1.0,
    **kwargs,
) -> Resolved:
    async def call() -> Resolved:
        fhir = FhirClient() if client else None
        try:
            return await resolve(
                templates, CONTEXT, prefetch, fhir, fhir_server, TOKEN, time.monotonic() + deadline, **kwargs
            )
        finally:
            if fhir:
                await fhir.aclose()

    return asyncio.run(call())


def test_resolve_mixed_states():
    prefetch = {
        "present": searchset("a1", "a2", warning=outcome("informational")),
        "null": None,
        "failed": outcome("exception"),
        "paged": searchset("e1", next_url=f"{BASE}/Observation?page=2&code=e"),
        "unrequested": searchset("zzz"),
    }
    with respx.mock(assert_all_called=True) as server:
        patient = server.get(f"{BASE}/Patient/pat1").respond(200, json={"resourceType": "Patient", "id": "pat1"})
        missing = server.get(f"{BASE}/Observation", params={"code": "c", "patient": "pat1"}).respond(
            200, json=searchset("c1")
        )
        failed = server.get(f"{BASE}/Observation", params={"code": "d"}).respond(200, json=searchset())
        paged = server.get(f"{BASE}/Observation", params={"page": "2"}).respond(200, json=searchset("e2", "e3"))
        resolved = run_resolve(prefetch)

    assert dict(resolved) == {
        "patient": [{"resourceType": "Patient", "id": "pat1"}],
        "present": [obs("a1"), obs("a2")],
        "null": [],
        "missing": [obs("c1")],
        "failed": [],
        "paged": [obs("e1"), obs("e2"), obs("e3")],
    }
    meta = resolved.meta
    assert {k: m.state for k, m in meta.items()} == {
        "patient": KeyState.MISSING,
        "present": KeyState.PRESENT,
        "null": KeyState.NULL,
        "missing": KeyState.MISSING,
        "failed": KeyState.FAILED,
        "paged": KeyState.PAGINATED,
    }
    assert {k: m.source for k, m in meta.items()} == {
        "patient": "fhir",
        "present": "prefetch",
        "null": "prefetch",
        "missing": "fhir",
        "failed": "fhir",
        "paged": "fhir",
    }
    assert meta["present"].warnings == [outcome("informational")] and meta["present"].pages == 0
    assert meta["paged"].pages == 1 and meta["missing"].pages == 1
    assert not resolved.failures
    for route in (patient, missing, failed, paged):
        assert route.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_resolve_full_prefetch_makes_no_request():
    prefetch = {key: searchset(key) for key in TEMPLATES}
    with respx.mock(assert_all_mocked=True):  # any request would fail: none is mocked
        resolved = run_resolve(prefetch, fhir_server=None, client=False)
    assert resolved["present"] == [obs("present")]


def test_resolve_read_not_found_is_absent_not_an_error():
    with respx.mock() as server:
        server.get(f"{BASE}/Patient/pat1").respond(404, json=outcome("not-found"))
        resolved = run_resolve(None, templates={"patient": TEMPLATES["patient"]})
    assert resolved["patient"] == []


def test_resolve_fetches_in_parallel_within_one_deadline():
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        return httpx.Response(200, json=searchset(request.url.params["code"]))

    templates = {f"k{i}": f"Observation?patient={{{{context.patientId}}}}&code=c{i}" for i in range(5)}
    with respx.mock() as server:
        server.get(f"{BASE}/Observation").mock(side_effect=slow)
        started = time.monotonic()
        resolved = run_resolve({}, templates=templates)
        elapsed = time.monotonic() - started
    assert elapsed < 0.5, f"5 x 0.2 s took {elapsed:.2f}s: not parallel"
    assert {k: [r["id"] for r in v] for k, v in resolved.items()} == {f"k{i}": [f"c{i}"] for i in range(5)}


def test_resolve_fetches_in_parallel_over_real_sockets():
    # respx replaces the transport; this checks that the connection pool really opens parallel connections.
    async def slow_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.2)
        body = b'{"resourceType": "Bundle", "type": "searchset"}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    async def call() -> tuple[Resolved, float]:
        server = await asyncio.start_server(slow_http, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/fhir"
        templates = {f"k{i}": f"Observation?patient={{{{context.patientId}}}}&code=c{i}" for i in range(5)}
        async with server, FhirClient() as client:
            started = time.monotonic()
            resolved = await resolve(templates, CONTEXT, None, client, base, TOKEN, started + 2.0)
            return resolved, time.monotonic() - started

    resolved, elapsed = asyncio.run(call())
    assert elapsed < 0.5, f"5 x 0.2 s took {elapsed:.2f}s: not parallel"
    assert dict(resolved) == {f"k{i}": [] for i in range(5)}


def test_resolve_deadline_covers_all_keys():
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=searchset())

    # respx records a call only when its side effect returns, which a cancelled one never does.
    with respx.mock(assert_all_called=False) as server:
        server.get(f"{BASE}/Observation").mock(side_effect=hang)
        server.get(f"{BASE}/Patient/pat1").mock(side_effect=hang)
        started = time.monotonic()
        with pytest.raises(PrefetchUnavailable) as info:
            run_resolve({"present": searchset()}, deadline=0.3)
        elapsed = time.monotonic() - started
    assert elapsed < 0.5
    assert info.value.keys == ["failed", "missing", "null", "paged", "patient"]
    assert {f.code for f in info.value.failures.values()} == {"timeout"}


def test_missing_fhir_server_is_unavailable():
    with pytest.raises(PrefetchUnavailable) as info:
        run_resolve({"present": searchset(), "null": None}, fhir_server=None)
    error = info.value
    assert error.keys == ["failed", "missing", "paged", "patient"]
    assert all("fhirServer" in f.reason for f in error.failures.values())
    assert error.issues()[0] == {
        "severity": "error",
        "code": "required",
        "diagnostics": "prefetch 'failed' unavailable: not in prefetch and the request has no fhirServer",
    }


def test_missing_client_is_unavailable():
    with pytest.raises(PrefetchUnavailable) as info:
        run_resolve({}, templates={"missing": TEMPLATES["missing"]}, client=False)
    assert info.value.failures["missing"].code == "not-supported"


def test_unrenderable_template_for_a_missing_key_is_unavailable():
    templates = {"user": "Practitioner/{{userPractitionerId}}", "p": "Patient/{{context.patientId}}"}
    with pytest.raises(PrefetchUnavailable) as info:
        run_resolve({"p": None}, templates={**templates, "user": "PractitionerRole/{{userPractitionerRoleId}}"})
    assert info.value.keys == ["user"]


def test_fhir_errors_per_key_with_outcome_and_no_token():
    with respx.mock() as server:
        server.get(f"{BASE}/Observation", params={"code": "c"}).respond(401, json=outcome("login"))
        server.get(f"{BASE}/Observation", params={"code": "d"}).respond(500, text="<html>oops</html>")
        server.get(f"{BASE}/Observation", params={"code": "e"}).respond(200, text="{not json")
        with pytest.raises(PrefetchUnavailable) as info:
            run_resolve({"patient": None, "present": None, "null": None, "failed": outcome("x")})
    failures = info.value.failures
    assert list(failures) == ["failed", "missing", "paged"]
    assert failures["paged"].code == "structure" and failures["paged"].outcome is None
    assert failures["missing"].status == 401 and failures["missing"].outcome == outcome("login")
    assert failures["missing"].code == "login" and failures["failed"].code == "exception"
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value.issues())


def test_optional_key_failure_is_reported_not_raised():
    templates = {"opt": TEMPLATES["missing"], "req": TEMPLATES["null"]}
    with respx.mock() as server:
        server.get(f"{BASE}/Observation").respond(503)
        resolved = run_resolve({"req": None}, templates=templates, required={"req"})
        with pytest.raises(PrefetchUnavailable) as info:
            run_resolve({"req": None}, templates=templates, required={"opt"})
    assert "opt" not in resolved and resolved["req"] == []
    assert resolved.failures["opt"].status == 503 and resolved.meta["opt"].state is KeyState.MISSING
    assert info.value.keys == ["opt"]


def test_unknown_required_key_is_a_programming_error():
    with pytest.raises(ValueError):
        run_resolve({}, templates={"a": "Patient/x"}, required={"b"})


def test_paginated_prefetch_with_foreign_next_link_reruns_the_template():
    prefetch = {"paged": searchset("stale", next_url="https://internal-name.ehr/fhir/Observation?page=2")}
    with respx.mock() as server:
        fresh = server.get(f"{BASE}/Observation", params={"code": "e"}).respond(200, json=searchset("e1", "e2"))
        resolved = run_resolve(prefetch, templates={"paged": TEMPLATES["paged"]})
    assert resolved["paged"] == [obs("e1"), obs("e2")] and fresh.called


def test_paginated_prefetch_with_expired_cursor_reruns_the_template():
    prefetch = {"paged": searchset("e1", next_url=f"{BASE}?_getpages=gone")}
    with respx.mock() as server:
        server.get(BASE, params={"_getpages": "gone"}).respond(410, json=outcome("not-found"))
        server.get(f"{BASE}/Observation", params={"code": "e"}).respond(200, json=searchset("e1", "e2"))
        resolved = run_resolve(prefetch, templates={"paged": TEMPLATES["paged"]})
    assert [r["id"] for r in resolved["paged"]] == ["e1", "e2"]


def test_paged_fetch_over_the_page_cap_is_unavailable():
    def endless(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        return httpx.Response(200, json=searchset(f"o{page}", next_url=f"{BASE}/Observation?page={page + 1}"))

    with respx.mock() as server:
        server.get(f"{BASE}/Observation").mock(side_effect=endless)
        with pytest.raises(PrefetchUnavailable) as info:
            run_resolve({}, templates={"m": TEMPLATES["missing"]}, max_pages=3)
    assert info.value.failures["m"].code == "incomplete"
