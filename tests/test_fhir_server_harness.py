"""The real FHIR server (local sekmet-fhir, or FHIR_BASE_URL) does what the service relies on."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from cds_hooks.fhir_client import (
    FhirAuthError,
    FhirClient,
    FhirNotFound,
    FhirPagingError,
    FhirServerError,
    SearchResult,
)
from cds_hooks.prefetch import KeyState, resolve
from tests.fhir_server import FhirTestServer, load_transaction, transaction, unique_id

pytestmark = pytest.mark.integration

SYSTEM = "http://example.org/fhir/CodeSystem/harness"
DEADLINE = 10.0


def observation(oid: str, patient: str, code: str, day: int) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": SYSTEM, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": f"2024-03-{day:02d}T08:00:00Z",
        "valueQuantity": {"value": day, "unit": "1", "system": "http://unitsofmeasure.org", "code": "1"},
    }


@pytest.fixture(scope="module")
def loaded(fhir_server: FhirTestServer) -> dict:
    """One patient with 7 observations on days 1..7: code `alpha` on odd days, `beta` on even days."""
    patient = unique_id("harness-pat")
    observations = [
        observation(unique_id(f"harness-obs{day}"), patient, "alpha" if day % 2 else "beta", day) for day in range(1, 8)
    ]
    load_transaction(fhir_server.base_url, transaction([{"resourceType": "Patient", "id": patient}, *observations]))
    return {"patient": patient, "ids_newest_first": [o["id"] for o in reversed(observations)]}


def search(server: FhirTestServer, query: str, max_pages: int = 10, token: str | None = None) -> SearchResult:
    async def call() -> SearchResult:
        async with FhirClient() as client:
            return await client.search(
                server.base_url, query, token or server.access_token, time.monotonic() + DEADLINE, max_pages
            )

    return asyncio.run(call())


def test_server_answers_metadata(fhir_base_url: str):
    response = httpx.get(f"{fhir_base_url}/metadata", headers={"Accept": "application/fhir+json"}, timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement" and body["fhirVersion"].startswith("4.0")


def test_token_or_list_sorted_newest_first_with_count(fhir_server, loaded):
    query = f"Observation?patient={loaded['patient']}&code={SYSTEM}|alpha,{SYSTEM}|beta&_sort=-date&_count=3"
    result = search(fhir_server, query, max_pages=10)
    assert [r["id"] for r in result.resources] == loaded["ids_newest_first"]
    assert result.pages == 3  # 3 + 3 + 1: _count is per page, across all codes of the OR list


def test_single_code_and_date_prefix(fhir_server, loaded):
    result = search(
        fhir_server, f"Observation?patient={loaded['patient']}&code={SYSTEM}|beta&date=ge2024-03-04&_sort=-date"
    )
    assert [r["effectiveDateTime"][:10] for r in result.resources] == ["2024-03-06", "2024-03-04"]


def test_paging_over_several_pages(fhir_server, loaded):
    result = search(fhir_server, f"Observation?patient={loaded['patient']}&_sort=-date&_count=2")
    assert result.pages == 4 and not result.truncated
    assert [r["id"] for r in result.resources] == loaded["ids_newest_first"]


def test_page_cap_against_the_real_server(fhir_server, loaded):
    with pytest.raises(FhirPagingError):
        search(fhir_server, f"Observation?patient={loaded['patient']}&_count=2", max_pages=2)


def test_unknown_search_parameter_is_refused_not_ignored(fhir_server, loaded):
    # FhirClient asks for strict handling: a silently dropped parameter would widen the result.
    with pytest.raises(FhirServerError) as info:
        search(fhir_server, f"Observation?patient={loaded['patient']}&no-such-param=1")
    assert info.value.status == 400 and info.value.outcome is not None


def test_form_post_search_like_the_sandbox(fhir_server, loaded):
    response = httpx.post(
        f"{fhir_server.base_url}/Observation/_search",
        data={"patient": loaded["patient"], "code": f"{SYSTEM}|alpha", "_sort": "-date"},
        headers=fhir_server.headers(),
        timeout=10,
    )
    assert response.status_code == 200
    dates = [e["resource"]["effectiveDateTime"][8:10] for e in response.json()["entry"]]
    assert dates == ["07", "05", "03", "01"]


def test_bearer_token_is_checked(fhir_server, loaded):
    if not fhir_server.access_token:
        pytest.skip("no access token configured for this server, so it cannot be shown to check one")
    with pytest.raises(FhirAuthError) as info:
        search(fhir_server, f"Observation?patient={loaded['patient']}", token="not-the-token")
    assert info.value.status == 401


def test_read_and_read_missing(fhir_server, loaded):
    async def read(reference: str) -> dict:
        async with FhirClient() as client:
            return await client.read(
                fhir_server.base_url, reference, fhir_server.access_token, time.monotonic() + DEADLINE
            )

    assert asyncio.run(read(f"Patient/{loaded['patient']}"))["id"] == loaded["patient"]
    with pytest.raises(FhirNotFound):
        asyncio.run(read(f"Patient/{unique_id('nobody')}"))


def test_resolve_mixed_prefetch_against_the_real_server(fhir_server, loaded):
    templates = {
        "patient": "Patient/{{context.patientId}}",
        "alpha": f"Observation?patient={{{{context.patientId}}}}&code={SYSTEM}|alpha&_sort=-date&_count=2",
        "beta": f"Observation?patient={{{{context.patientId}}}}&code={SYSTEM}|beta&_sort=-date",
        "none": f"Observation?patient={{{{context.patientId}}}}&code={SYSTEM}|gamma",
    }
    prefetch = {"beta": {"resourceType": "OperationOutcome", "issue": []}, "none": None}

    async def call():
        async with FhirClient() as client:
            return await resolve(
                templates,
                {"patientId": loaded["patient"]},
                prefetch,
                client,
                fhir_server.base_url,
                fhir_server.access_token,
                time.monotonic() + DEADLINE,
            )

    resolved = asyncio.run(call())
    assert resolved["patient"][0]["id"] == loaded["patient"]
    assert [r["effectiveDateTime"][8:10] for r in resolved["alpha"]] == ["07", "05", "03", "01"]
    assert resolved.meta["alpha"].pages == 2
    assert [r["effectiveDateTime"][8:10] for r in resolved["beta"]] == ["06", "04", "02"]
    assert resolved.meta["beta"].state is KeyState.FAILED and resolved["none"] == []
