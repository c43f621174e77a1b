"""Operations endpoints (service/web/ops.py) and metrics (service/web/metrics.py), in process.

The same endpoints are exercised out of process, as the container starts them, in
tests/test_deploy.py (the Dockerfile rehearsal)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.web import metrics, ops
from service.web.app import create_app
from service.web.settings import Settings
from tests.cases import BY_NAME, hook_request, prefetch_for
from tests.conftest import dev_settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIGN, SELECT = "/cds-services/hematotox-order-sign", "/cds-services/hematotox-order-select"


def scrape(client: TestClient) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value} of every sample on /metrics."""
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def production_app(tmp_path: Path):
    """Production settings: no development mode, no trusted clients (every hook call is refused)."""
    settings = Settings(
        service={"development_mode": False}, feedback={"sqlite_path": str(tmp_path / "feedback.sqlite3")}
    )
    return create_app(settings)


# ---- probes -------------------------------------------------------------------------------------


def test_probes_and_metrics_answer_without_any_token_in_production_mode(tmp_path):
    with TestClient(production_app(tmp_path), raise_server_exceptions=False) as c:
        health = c.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        assert ready.json()["checks"]["config"] == "ok"
        assert ready.json()["checks"]["database"] in ("ok", "not configured")
        assert c.get("/metrics").status_code == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(path).headers["cache-control"] == "no-store"


def test_probes_are_not_in_the_openapi_document(client):
    r = client.get("/openapi.json")
    paths = r.json().get("paths", {}) if r.status_code == 200 else {}
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)


class _Store:
    def __init__(self, ping):
        self.ping = ping


class _Engine:
    def connect(self):
        raise ConnectionRefusedError("postgresql://user:secret-password@db/x refused")


class _EngineStore:
    engine = _Engine()


@pytest.mark.parametrize(
    ("store", "status", "database"),
    [
        (None, 200, "not configured"),
        (_Store(lambda: True), 200, "ok"),
        (_Store(lambda: False), 503, "fail: ping returned false"),
        (_Store(lambda: (_ for _ in ()).throw(OSError("password=secret-password"))), 503, "fail: OSError"),
        (_EngineStore(), 503, "fail: ConnectionRefusedError"),
    ],
)
def test_readyz_follows_the_feedback_database(tmp_path, store, status, database):
    with TestClient(production_app(tmp_path), raise_server_exceptions=False) as c:
        original = getattr(c.app.state, "feedback_store", None)
        c.app.state.feedback_store = store
        try:
            r = c.get("/readyz")
        finally:
            c.app.state.feedback_store = original
    assert r.status_code == status
    assert r.json()["checks"] == {"config": "ok", "database": database}
    assert "secret-password" not in r.text  # exception messages may hold a database URL


def test_readyz_with_an_async_ping_and_a_ping_that_hangs(tmp_path, monkeypatch):
    async def ok():
        return True

    async def hangs():
        await asyncio.sleep(30)

    monkeypatch.setattr(ops, "READY_TIMEOUT_S", 0.2)
    with TestClient(production_app(tmp_path), raise_server_exceptions=False) as c:
        original = getattr(c.app.state, "feedback_store", None)
        try:
            c.app.state.feedback_store = _Store(ok)
            assert c.get("/readyz").json()["checks"]["database"] == "ok"
            c.app.state.feedback_store = _Store(hangs)
            r = c.get("/readyz")
        finally:
            c.app.state.feedback_store = original
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "fail: TimeoutError"


def test_readyz_pings_the_real_feedback_store_when_the_app_has_one(tmp_path):
    with TestClient(production_app(tmp_path), raise_server_exceptions=False) as c:
        if getattr(c.app.state, "feedback_store", None) is None:
            pytest.skip("the app has no feedback store yet")
        r = c.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"


# ---- metrics ------------------------------------------------------------------------------------


def post_example(client: TestClient, name: str):
    body = json.loads((EXAMPLES / name).read_text())
    r = client.post(f"/cds-services/hematotox-{body['hook']}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_metrics_after_hooks_have_the_documented_names_and_labels(client):
    before = scrape(client)
    high = post_example(client, "order-sign-high.json")
    post_example(client, "order-sign-low.json")
    post_example(client, "order-select-indeterminate.json")
    after = scrape(client)

    groups = [metrics.risk_group(c) for c in high["cards"]]
    assert "high" in groups  # the example really is a HIGH card: the extension path is right

    hook = "hematotox_hook_duration_seconds"
    sign = {"service": "hematotox-order-sign", "hook": "order-sign", "status": "200"}
    select = {"service": "hematotox-order-select", "hook": "order-select", "status": "200"}
    assert value(after, hook + "_count", **sign) - value(before, hook + "_count", **sign) == 2
    assert value(after, hook + "_count", **select) - value(before, hook + "_count", **select) == 1
    assert value(after, hook + "_sum", **sign) > value(before, hook + "_sum", **sign)
    buckets = {dict(k)["le"] for k in after[hook + "_bucket"] if dict(k)["service"] == sign["service"]}
    assert {"0.1", "1.0", "3.0", "+Inf"} <= buckets
    for group, delta in (("high", 1), ("low", 1), ("indeterminate", 1)):
        assert (
            value(after, "hematotox_cards_total", group=group) - value(before, "hematotox_cards_total", group=group)
            == delta
        ), group
    assert {dict(k)["group"] for k in after["hematotox_cards_total"]} <= {"low", "high", "indeterminate", "none"}
    # Full prefetch: no FHIR fallback.
    assert value(after, "hematotox_fhir_fallback_calls_total") == value(before, "hematotox_fhir_fallback_calls_total")
    assert not any(name.endswith("_created") for name in after)


def test_every_documented_metric_is_exposed(client):
    metrics.count_jwt_rejection("Expired Token!")
    metrics.count_fhir_fetch(False, "timeout")
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    expected = {
        "hematotox_hook_duration_seconds": ("histogram", {"service", "hook", "status"}),
        "hematotox_cards": ("counter", {"group"}),
        "hematotox_fhir_fallback_calls": ("counter", set()),
        "hematotox_fhir_fallback_failures": ("counter", {"reason"}),
        "hematotox_jwt_rejections": ("counter", {"reason"}),
    }
    for name, (kind, labels) in expected.items():
        assert name in families, name
        assert families[name].type == kind
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
    reasons = {s.labels["reason"] for s in families["hematotox_jwt_rejections"].samples}
    assert "expired_token" in reasons  # reduced to a safe label value


def test_a_412_is_timed_and_counts_no_fallback_call(client):
    before = scrape(client)
    r = client.post(SIGN, json=hook_request("order-sign", "p", None))  # no prefetch, no fhirServer
    assert r.status_code == 412
    after = scrape(client)
    labels = {"service": "hematotox-order-sign", "hook": "order-sign", "status": "412"}
    assert (
        value(after, "hematotox_hook_duration_seconds_count", **labels)
        - value(before, "hematotox_hook_duration_seconds_count", **labels)
        == 1
    )
    assert value(after, "hematotox_fhir_fallback_calls_total") == value(before, "hematotox_fhir_fallback_calls_total")


def test_fhir_fallback_calls_and_failures_are_counted(tmp_path):
    base = "https://fhir.test/r4"
    settings = dev_settings(fhir={"allowed_servers": [base]}, feedback={"sqlite_path": str(tmp_path / "f.db")})
    pre = prefetch_for(BY_NAME["T1"].observations("p"), "p")
    del pre["ferritin"], pre["crp"]  # two keys the service must fetch itself
    req = hook_request("order-sign", "p", None, prefetch=pre, fhir_server=base)
    empty = {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}

    def answer(request: httpx.Request) -> httpx.Response:
        if "ferritin" in str(request.url) or _ferritin_codes_in(request):
            return httpx.Response(200, json=empty, headers={"content-type": "application/fhir+json"})
        return httpx.Response(
            401,
            json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]},
            headers={"content-type": "application/fhir+json"},
        )

    with (
        TestClient(create_app(settings), raise_server_exceptions=False) as c,
        respx.mock(assert_all_called=False) as server,
    ):
        server.route(host="fhir.test").mock(side_effect=answer)
        templates = dict(c.app.state.clinic.templates)
        before = scrape(c)
        r = c.post(SIGN, json=req)
        after = scrape(c)
    assert r.status_code == 412, r.text  # crp is required
    calls = value(after, "hematotox_fhir_fallback_calls_total") - value(before, "hematotox_fhir_fallback_calls_total")
    failed = sum(after.get("hematotox_fhir_fallback_failures_total", {}).values()) - sum(
        before.get("hematotox_fhir_fallback_failures_total", {}).values()
    )
    fetched = [k for k in templates if k not in pre]  # ferritin, crp and any key the example lacks
    assert "ferritin" in fetched and "crp" in fetched
    assert calls == len(fetched)
    assert failed == len(fetched) - 1  # all but ferritin: 401 -> "login" (the 412 still counts every key)
    reasons = {
        dict(k)["reason"]
        for k, v in after["hematotox_fhir_fallback_failures_total"].items()
        if v > value(before, "hematotox_fhir_fallback_failures_total", **dict(k))
    }
    assert reasons == {"login"}


def test_failed_optional_fallback_fetches_are_counted_on_a_200(tmp_path):
    base = "https://fhir.test/r4"
    settings = dev_settings(fhir={"allowed_servers": [base]}, feedback={"sqlite_path": str(tmp_path / "f.db")})
    pre = prefetch_for(BY_NAME["T1"].observations("p"), "p")
    del pre["conditions"]  # optional: the score is given without it
    req = hook_request("order-sign", "p", None, prefetch=pre, fhir_server=base)
    with (
        TestClient(create_app(settings), raise_server_exceptions=False) as c,
        respx.mock(assert_all_called=False) as server,
    ):
        server.route(host="fhir.test").mock(
            return_value=httpx.Response(
                503,
                json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "transient"}]},
                headers={"content-type": "application/fhir+json"},
            )
        )
        fetched = [k for k in c.app.state.clinic.templates if k not in pre]
        before = scrape(c)
        r = c.post(SIGN, json=req)
        after = scrape(c)
    assert r.status_code == 200, r.text
    calls = value(after, "hematotox_fhir_fallback_calls_total") - value(before, "hematotox_fhir_fallback_calls_total")
    failed = sum(after.get("hematotox_fhir_fallback_failures_total", {}).values()) - sum(
        before.get("hematotox_fhir_fallback_failures_total", {}).values()
    )
    assert calls == len(fetched) and failed == len(fetched)


def _ferritin_codes_in(request: httpx.Request) -> bool:
    from service.clinical.valuesets import value_sets

    codes = value_sets().prefetch_codes["ferritin"]
    url = str(request.url) + request.content.decode(errors="replace")
    return any(f"loinc.org%7C{c}" in url or f"loinc.org|{c}" in url for c in codes)


# ---- the functions other modules call ----------------------------------------------------------


def test_label_values_are_reduced_to_a_safe_alphabet():
    assert metrics.label("Bad Signature") == "bad_signature"
    assert metrics.label("x" * 100) == "x" * 40
    assert metrics.label("") == "unknown"
    assert metrics.label('"}\n{evil="1') == "evil_1"


def test_risk_group_reads_the_extension_of_models_and_dicts():
    card = {"extension": {"hematotox-cds": {"hematotox": {"confirmed": {"group": "low"}}}}}
    assert metrics.risk_group(card) == "low"
    assert metrics.risk_group({"summary": "x"}) is None
    assert metrics.risk_group({"extension": {"hematotox-cds": {}}}) is None


def test_prepare_multiprocess(monkeypatch, tmp_path):
    monkeypatch.setenv(metrics.MULTIPROC_ENV, "")  # recorded, so the variable is restored afterwards
    monkeypatch.delenv(metrics.MULTIPROC_ENV)
    assert metrics.prepare_multiprocess(1) is None
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    path = metrics.prepare_multiprocess(2)
    assert path and Path(path).is_dir() and Path(path).parent == tmp_path
    stale = Path(path) / "counter_12345.db"
    stale.write_bytes(b"old")
    assert metrics.prepare_multiprocess(2) == path  # the variable is set now: reused, emptied
    assert not stale.exists()
