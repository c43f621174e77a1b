"""Reuse of order-select's data at order-sign (service/web/reuse.py), and the one log line per hook."""

from __future__ import annotations

import copy
import logging
import uuid

import orjson
import pytest
import respx
from fastapi.testclient import TestClient

from cds_hooks.models import HookRequest, order_context
from service.clinical.valuesets import value_sets
from service.web.app import create_app
from service.web.logging_setup import JsonFormatter
from service.web.reuse import DEV_ISSUER, MAX_ENTRY_BYTES, ReuseCache, issuer_of, ld_orders_fingerprint, reuse_key
from tests.cases import BY_NAME, hook_request, ld_orders, prefetch_for
from tests.conftest import dev_settings
from tests.fake_fhir import FakeFhir

BASE = "https://ehr.test/fhir"
TOKEN = "at-reuse-SECRET-31"
SELECT = "/cds-services/hematotox-order-select"
SIGN = "/cds-services/hematotox-order-sign"
TTL = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def with_issuer(app):
    """Stands in for the JWT layer: `X-Test-Issuer` becomes the verified client on request.state."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            issuer = dict(scope["headers"]).get(b"x-test-issuer")
            if issuer:
                scope.setdefault("state", {})["cds_client"] = issuer.decode()
        await app(scope, receive, send)

    return wrapped


@pytest.fixture(scope="module")
def service():
    app = create_app(dev_settings(fhir={"allowed_servers": [BASE], "deadline_seconds": 2.0}))
    with TestClient(with_issuer(app), raise_server_exceptions=False) as client:
        yield app, client


@pytest.fixture
def clock(service) -> Clock:
    app, _ = service
    clock = Clock()
    app.state.reuse = app.state.pipeline.reuse = ReuseCache(TTL, 16, timer=clock)
    return clock


@pytest.fixture
def client(service, clock) -> TestClient:
    return service[1]


@pytest.fixture
def fhir():
    """Two patients on the fake EHR: A (T9, high: its labs may be reused) and B (T1, low)."""
    resources = []
    for patient, case in (("pat-A", "T9"), ("pat-B", "T1")):
        resources += BY_NAME[case].observations(patient)
        resources.append({"resourceType": "Patient", "id": patient, "birthDate": "1960-01-01"})
    server = FakeFhir(BASE, resources, token=TOKEN)
    with respx.mock(base_url=BASE, assert_all_called=False, assert_all_mocked=True) as router:
        router.route().mock(side_effect=server)
        yield server


def hook(
    client: TestClient,
    hook_name: str,
    patient: str = "pat-A",
    *,
    issuer: str | None = None,
    user: str | None = None,
    orders: list[dict] | None = None,
    prefetch: dict | None = None,
):
    req = hook_request(hook_name, patient, None, fhir_server=BASE, token=TOKEN, orders=orders, prefetch=prefetch)
    req["hookInstance"] = str(uuid.uuid4())
    if user:
        req["context"]["userId"] = user
    headers = {"x-test-issuer": issuer} if issuer else {}
    response = client.post(SELECT if hook_name == "order-select" else SIGN, json=req, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def risk(body: dict) -> dict:
    card = next(c for c in body["cards"] if "hematotox" in c.get("extension", {}).get("hematotox-cds", {}))
    return card


# ------------------------------------------------------------------------------ through HTTP


def test_order_sign_reuses_order_select_data_with_zero_fhir_requests(client, fhir):
    selected = hook(client, "order-select")
    assert len(fhir.requests) == 11  # every key, nothing prefetched
    fhir.requests.clear()
    signed = hook(client, "order-sign")
    assert fhir.requests == []
    a, b = risk(selected), risk(signed)
    assert a["extension"] == b["extension"]  # the same data, T0 recomputed to the same value
    assert a["uuid"] != b["uuid"]  # cards are never cached: fresh uuids


def test_another_patient_is_a_miss(client, fhir):
    hook(client, "order-select", "pat-A")
    fhir.requests.clear()
    signed = hook(client, "order-sign", "pat-B")
    assert len(fhir.requests) == 11
    assert risk(signed)["extension"]["hematotox-cds"]["hematotox"]["confirmed"]["group"] == "low"  # B's own data


def test_another_issuer_is_a_miss(client, fhir):
    hook(client, "order-select", issuer="https://ehr-one.example.org")
    fhir.requests.clear()
    hook(client, "order-sign", issuer="https://ehr-two.example.org")
    assert len(fhir.requests) == 11
    fhir.requests.clear()
    hook(client, "order-sign", issuer="https://ehr-one.example.org")
    assert fhir.requests == []
    fhir.requests.clear()
    hook(client, "order-sign")  # no verified client (development mode) is yet another issuer
    assert len(fhir.requests) == 11


def test_another_user_is_a_miss(client, fhir):
    hook(client, "order-select", user="Practitioner/doc1")
    fhir.requests.clear()
    hook(client, "order-sign", user="Practitioner/doc2")
    assert len(fhir.requests) == 11


@pytest.mark.parametrize("change", ["start", "drug", "id", "added-order"])
def test_changed_ld_orders_are_a_miss(client, fhir, change):
    hook(client, "order-select", orders=ld_orders("pat-A"))
    fhir.requests.clear()
    orders = ld_orders("pat-A")
    if change == "start":
        orders = ld_orders("pat-A", start="2024-03-11T10:00:00+00:00")
    elif change == "drug":
        orders[0]["medicationCodeableConcept"]["coding"][0]["code"] = "1234567"  # another fludarabine product
        orders[0]["medicationCodeableConcept"]["text"] = "fludarabine 50 mg vial"
    elif change == "id":
        orders[1]["id"] = "ld-new"
    else:
        orders = ld_orders("pat-A", drugs=("24698", "3002", "134547"))
    hook(client, "order-sign", orders=orders)
    assert len(fhir.requests) == 11


def test_a_non_ld_order_alongside_does_not_matter(client, fhir):
    hook(client, "order-select")
    fhir.requests.clear()
    aspirin = {
        "resourceType": "MedicationRequest",
        "id": "asa",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/pat-A"},
        "medicationCodeableConcept": {"text": "aspirin"},
    }
    hook(client, "order-sign", orders=[*ld_orders("pat-A"), aspirin])
    assert fhir.requests == []


def test_expired_ttl_is_a_miss(client, fhir, clock):
    hook(client, "order-select")
    clock.now += TTL - 1
    fhir.requests.clear()
    hook(client, "order-sign")
    assert fhir.requests == []
    clock.now += 2
    hook(client, "order-sign")
    assert len(fhir.requests) == 11


def test_prefetch_wins_over_the_cache_and_only_lacking_keys_are_reused(client, fhir):
    hook(client, "order-select")  # stores T1 (low) data
    fhir.requests.clear()
    prefetch = prefetch_for(BY_NAME["T9"].observations("pat-A"), "pat-A")  # platelets 75: high
    del prefetch["ferritin"], prefetch["patient"]
    signed = hook(client, "order-sign", prefetch=prefetch)
    assert fhir.requests == []
    ext = risk(signed)["extension"]["hematotox-cds"]
    assert ext["hematotox"]["confirmed"]["group"] == "high"  # the sent platelets, not the cached ones


def test_order_sign_does_not_store_and_order_select_does_not_read(client, fhir):
    hook(client, "order-sign")
    fhir.requests.clear()
    hook(client, "order-sign")
    assert len(fhir.requests) == 11
    hook(client, "order-select")
    fhir.requests.clear()
    hook(client, "order-select")
    assert len(fhir.requests) == 11


def test_failed_optional_keys_are_not_stored(client, fhir):
    fhir.resources = [r for r in fhir.resources if r["resourceType"] != "Condition"]
    original = fhir.__class__._search

    def failing(self, rtype, params):
        if rtype == "Condition":
            import httpx

            return httpx.Response(500)
        return original(self, rtype, params)

    fhir._search = failing.__get__(fhir)
    hook(client, "order-select")
    fhir.requests.clear()
    hook(client, "order-sign")
    assert [r.url.path for r in fhir.requests] == ["/fhir/Condition"]  # only the failed key again


# ------------------------------------------------------------------------------ the module


def _ctx(patient: str = "p1", orders: list[dict] | None = None, hook_name: str = "order-sign"):
    req = hook_request(hook_name, patient, None, orders=orders)
    return order_context(HookRequest.model_validate(req))


def test_fingerprint_ignores_order_of_orders_and_non_ld_orders():
    vs = value_sets()
    orders = ld_orders("p1")
    other = {
        "resourceType": "MedicationRequest",
        "id": "x",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"text": "ondansetron"},
    }
    a = ld_orders_fingerprint(_ctx(orders=orders), vs)
    assert a == ld_orders_fingerprint(_ctx(orders=[other, *reversed(orders)]), vs)
    assert a != ld_orders_fingerprint(_ctx(orders=ld_orders("p1", start=None)), vs)


def test_key_separates_issuer_server_user_patient():
    vs = value_sets()
    base = reuse_key("iss", BASE, _ctx(), vs)
    assert reuse_key("iss", BASE + "/", _ctx(), vs) == base
    assert reuse_key("iss2", BASE, _ctx(), vs) != base
    assert reuse_key("iss", "https://other.test/fhir", _ctx(), vs) != base
    assert reuse_key("iss", BASE, _ctx("p2", ld_orders("p2")), vs) != base
    assert "p1" in base  # the patient id is in the key itself, not only in a digest: never a collision


def test_issuer_of_request_state():
    class State:
        pass

    state = State()
    assert issuer_of(state) == DEV_ISSUER
    state.cds_client = "https://sandbox.cds-hooks.org"
    assert issuer_of(state) == "https://sandbox.cds-hooks.org"


def test_cache_is_bounded_copies_values_and_expires():
    clock = Clock()
    cache = ReuseCache(10, 2, timer=clock)
    data = {"anc": [{"resourceType": "Observation", "id": "a"}]}
    for i in range(3):
        cache.put(("i", "s", "u", f"p{i}", "f"), data)
    assert len(cache) == 2 and cache.get(("i", "s", "u", "p0", "f")) is None
    got = cache.get(("i", "s", "u", "p2", "f"))
    got["anc"][0]["id"] = "changed"
    assert cache.get(("i", "s", "u", "p2", "f")) == data
    clock.now += 11
    assert cache.get(("i", "s", "u", "p2", "f")) is None


def test_cache_refuses_oversized_entries_and_can_be_disabled():
    cache = ReuseCache(10, 2)
    big = {"anc": [{"resourceType": "Observation", "id": "x" * (MAX_ENTRY_BYTES + 1)}]}
    assert cache.put(("k",) * 5, big) is False and cache.get(("k",) * 5) is None
    off = ReuseCache(0, 10)
    assert off.put(("k",) * 5, {"anc": []}) is False
    assert off.before_resolve("order-sign", ("k",) * 5, {"anc"}) == (None, "skip")


# ------------------------------------------------------------------------------ the log line


def hook_lines(caplog) -> list[dict]:
    formatter = JsonFormatter()
    return [orjson.loads(formatter.format(r)) for r in caplog.records if r.name == "hematotox.hook" and r.msg == "hook"]


def test_one_log_line_per_hook_with_stages_cache_and_fetch_counts(client, fhir, caplog):
    with caplog.at_level(logging.INFO, logger="hematotox.hook"):
        hook(client, "order-select")
        hook(client, "order-sign")
        hook(client, "order-sign", "pat-B")
    select, hit, miss = hook_lines(caplog)
    for line in (select, hit, miss):
        assert set(line) == {
            "ts",
            "level",
            "logger",
            "msg",
            "hookInstance",
            "service",
            "hook",
            "caller",
            "status",
            "cards",
            "ms",
            "cache",
            "fhir",
        }
        assert line["caller"] == "none (development mode)"  # the client fixture runs without a JWT
        uuid.UUID(line["hookInstance"])
        assert set(line["ms"]) == {"parse", "fetch", "score", "cards"}
        assert all(isinstance(v, float) and v >= 0 for v in line["ms"].values())
        assert set(line["fhir"]) == {"keysFetched", "keysFailed", "keysReused", "pages", "stoppedEarly"}
        text = orjson.dumps(line).decode()
        for secret in (TOKEN, "pat-A", "pat-B", "Bearer", "1960-01-01", "751-8", "doc1"):
            assert secret not in text
    assert select["cache"] == "skip" and select["fhir"]["keysFetched"] == 11 and select["fhir"]["pages"] == 11
    assert hit["cache"] == "hit" and hit["fhir"] == {
        "keysFetched": 0,
        "keysFailed": 0,
        "keysReused": 11,
        "pages": 0,
        "stoppedEarly": 0,
    }
    assert miss["cache"] == "miss" and miss["fhir"]["keysFetched"] == 11
    assert select["hook"] == "order-select" and select["status"] == 200 and select["cards"] == 2


def test_log_line_of_a_412_has_fetch_counts(client, caplog):
    with respx.mock(base_url=BASE, assert_all_mocked=True) as router:
        router.route().respond(401)
        with caplog.at_level(logging.INFO, logger="hematotox.hook"):
            req = hook_request("order-sign", "pat-A", None, fhir_server=BASE, token=TOKEN)
            assert client.post(SIGN, json=req).status_code == 412
    (line,) = hook_lines(caplog)
    assert line["status"] == 412 and line["cache"] == "miss"
    assert line["fhir"]["keysFetched"] == 11 and line["fhir"]["keysFailed"] == 11
    assert set(line["ms"]) == {"parse", "fetch"}
    assert TOKEN not in orjson.dumps(line).decode()


def test_full_prefetch_logs_no_fetch(client, caplog):
    observations = BY_NAME["T1"].observations("pat-A")
    prefetch = copy.deepcopy(prefetch_for(observations, "pat-A"))
    prefetch["ecog"] = None
    with caplog.at_level(logging.INFO, logger="hematotox.hook"):
        client.post(SIGN, json=hook_request("order-sign", "pat-A", None, prefetch=prefetch))
    (line,) = hook_lines(caplog)
    assert line["cache"] == "skip" and line["fhir"]["keysFetched"] == 0 and line["fhir"]["pages"] == 0


def test_fingerprint_tolerates_any_json_where_lists_are_expected():
    vs = value_sets()
    orders = ld_orders("p1")
    orders[0]["dosageInstruction"] = 5
    orders[1]["contained"] = {"resourceType": "Medication"}
    orders[1]["dosageInstruction"] = [7, {"timing": {"repeat": [1], "event": {"x": 1}}}]
    assert len(ld_orders_fingerprint(_ctx(orders=orders), vs)) == 64


def test_data_nested_too_deep_to_serialise_is_a_miss_not_an_error():
    vs = value_sets()
    deep: object = []
    for _ in range(300):
        deep = [deep]
    orders = ld_orders("p1")
    orders[0]["medicationCodeableConcept"]["extension"] = deep
    ctx = _ctx(orders=orders)
    assert ld_orders_fingerprint(ctx, vs) != ld_orders_fingerprint(ctx, vs)  # never equal: never a hit
    cache = ReuseCache(10, 2)
    assert cache.put(("k",) * 5, {"anc": [{"resourceType": "Observation", "x": deep}]}) is False


def test_deeply_nested_order_through_http_is_answered(client, fhir):
    deep: object = {}
    for _ in range(300):
        deep = {"a": deep}
    orders = ld_orders("pat-A")
    orders[0]["medicationCodeableConcept"]["extension"] = [deep]
    body = hook(client, "order-select", orders=orders)
    assert risk(body)


def test_only_what_was_fetched_is_kept(service, client, fhir):
    from tests.cases import prefetch_for

    app = service[0]
    full = prefetch_for(BY_NAME["T9"].observations("pat-A"), "pat-A")
    hook(client, "order-select", prefetch=full)
    assert len(app.state.reuse) == 0 and fhir.requests == []  # all prefetched: nothing held in memory
    partial = {k: v for k, v in full.items() if k not in ("ferritin", "conditions")}
    hook(client, "order-select", prefetch=partial)
    (entry,) = app.state.reuse._entries.values()
    assert set(entry) == {"ferritin", "conditions"}


def test_a_low_or_indeterminate_score_always_refetches_the_ht_labs(client, fhir):
    """A lab resulting between order-select and order-sign can turn LOW into HIGH: only a HIGH
    (which new labs can only confirm) is served from cached labs."""
    hook(client, "order-select", "pat-B")  # T1: LOW
    fhir.requests.clear()
    hook(client, "order-sign", "pat-B")
    keys = sorted(
        r.url.params.get("code", "patient").split("|")[1].split(",")[0] if "code" in r.url.params else "patient"
        for r in fhir.requests
    )
    assert len(fhir.requests) == 5 and "patient" not in keys  # the five HT keys, nothing else


def test_a_paginated_prefetch_page_is_continued_not_replaced_by_the_cache(client, fhir):
    """The client's own first page may hold results newer than the cache: its `next` is followed."""
    from tests.cases import prefetch_for

    hook(client, "order-select")  # pat-A, HIGH: every key cached
    fhir.requests.clear()
    pre = prefetch_for(BY_NAME["T9"].observations("pat-A"), "pat-A")
    plt = pre["platelets"]
    plt["link"] = [
        {
            "relation": "next",
            "url": f"{BASE}/Observation?patient=pat-A&code=http://loinc.org|777-3&_sort=-date&_count=1&_offset=1",
        }
    ]
    hook(client, "order-sign", prefetch=pre)
    assert [r.url.params["_offset"] for r in fhir.requests] == ["1"]  # the continuation, nothing from the cache
