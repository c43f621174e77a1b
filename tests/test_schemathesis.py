"""schemathesis against the service's own OpenAPI document: at least 1,000 generated requests
(schema-conforming and schema-violating), each with a fresh valid JWT, and not one 5xx."""

from __future__ import annotations

import time
from collections import Counter
from urllib.parse import unquote

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from service.web.app import create_app
from tests.conftest import dev_settings
from tests.jwt_keys import BASE, Ehr, bearer, write_jwks

# Examples per (operation, mode); discovery has no inputs and yields only a handful.
BUDGET = {GenerationMode.POSITIVE: 360, GenerationMode.NEGATIVE: 200}
MIN_REQUESTS = 1000


def test_openapi_declares_the_request_bodies(tmp_path):
    with TestClient(create_app(dev_settings(feedback={"sqlite_path": str(tmp_path / "f.sqlite3")}))) as c:
        doc = c.get("/openapi.json").json()
    service = doc["paths"]["/cds-services/{service_id}"]["post"]
    feedback = doc["paths"]["/cds-services/{service_id}/feedback"]["post"]
    for op in (service, feedback):
        assert op["requestBody"]["required"] is True
        assert op["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"
        ids = next(p for p in op["parameters"] if p["name"] == "service_id")["schema"]["enum"]
        assert ids == ["hematotox-follow-up", "hematotox-order-select", "hematotox-order-sign"]
    assert service["requestBody"]["content"]["application/json"]["schema"]["properties"]["hook"]["enum"] == [
        "order-select",
        "order-sign",
        "patient-view",
    ]


def test_generated_requests_never_get_a_5xx(tmp_path):
    ehr = Ehr(alg="ES384", kid="fuzz")
    app_settings = dev_settings(
        service={"development_mode": False, "public_base_url": BASE},
        trusted_clients=[{"issuer": ehr.issuer, "jwks_file": str(write_jwks(tmp_path / "jwks.json", ehr))}],
        fhir={"allowed_servers": []},  # whatever fhirServer is generated, nothing is ever contacted
        feedback={"sqlite_path": str(tmp_path / "feedback.sqlite3")},
    )
    app = create_app(app_settings)
    statuses: Counter[int] = Counter()
    per_operation: Counter[str] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    with TestClient(app):  # runs the lifespan (FHIR client, feedback store) for schemathesis' calls
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {
            "GET /cds-services",
            "POST /cds-services/{service_id}",
            "POST /cds-services/{service_id}/feedback",
        }

        def fuzzer(operation, mode, budget):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=budget,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case):
                # A fresh, valid JWT for exactly the URL called: the fuzzing reaches the handlers.
                audience = BASE + unquote(case.formatted_path)
                response = case.call(headers=bearer(ehr.token(audience)))
                statuses[response.status_code] += 1
                per_operation[operation.label] += 1
                if response.status_code >= 500:
                    failures.append(f"{operation.label} {mode}: {response.status_code} {response.text[:300]}")

            return run

        for operation in operations:
            for mode, budget in BUDGET.items():
                run = fuzzer(operation, mode, budget)
                try:
                    run()
                except Unsatisfiable:
                    # No input can violate the schema of an operation that takes none (discovery).
                    assert mode is GenerationMode.NEGATIVE and operation.label == "GET /cds-services"
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    print(
        f"schemathesis: {total} requests in {elapsed:.1f} s; by status {dict(sorted(statuses.items()))}; "
        f"by operation {dict(per_operation)}"
    )
    assert not failures, failures[:5]
    assert total >= MIN_REQUESTS
    # The generated requests get past validation, not only 400s: answered (200), or refused at the FHIR
    # fallback (412, no server allowed). Issue 13 added patient-view: a third of the generated service
    # calls now name a hook their service does not answer, and patient-view without its prefetch key
    # stops at 412, and draftOrders is no longer required by the schema: 200s alone fell from over 100 to
    # 55-75, 200s and 412s together are 90-110 in repeated runs.
    assert statuses[200] + statuses[412] > 50
