"""CORS with an explicit origin list, the request body limit (413), and API response headers."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.web.app import create_app
from service.web.settings import Settings
from tests.cases import BY_NAME, hook_request
from tests.conftest import dev_settings

SIGN = "/cds-services/hematotox-order-sign"
SANDBOX = "https://sandbox.cds-hooks.org"
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def hardened(tmp_path_factory):
    settings = dev_settings(
        service={"cors_origins": [SANDBOX], "max_body_bytes": LIMIT},
        feedback={"sqlite_path": str(tmp_path_factory.mktemp("h") / "f.sqlite3")},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


# --------------------------------------------------------------------------- CORS
def test_preflight_from_an_allowed_origin(hardened):
    r = hardened.options(
        SIGN,
        headers={
            "Origin": SANDBOX,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == SANDBOX
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in r.headers


def test_preflight_from_another_origin_is_not_allowed(hardened):
    r = hardened.options(SIGN, headers={"Origin": "https://evil.example.org", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers


def test_simple_request_carries_the_origin_only_when_allowed(hardened):
    assert hardened.get("/cds-services", headers={"Origin": SANDBOX}).headers["access-control-allow-origin"] == SANDBOX
    assert (
        "access-control-allow-origin" not in hardened.get("/cds-services", headers={"Origin": "https://x.org"}).headers
    )


def test_no_cors_headers_without_configured_origins(client):
    assert "access-control-allow-origin" not in client.get("/cds-services", headers={"Origin": SANDBOX}).headers


@pytest.mark.parametrize("origins", [["*"], ["https://sandbox.cds-hooks.org/path"], ["sandbox.cds-hooks.org"]])
def test_wildcard_or_non_origin_is_refused_in_config(origins):
    with pytest.raises(ValueError):
        Settings(service={"cors_origins": origins})


# --------------------------------------------------------------------------- body limit
def assert_413(r) -> None:
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "too-costly"
    assert r.headers["cache-control"] == "no-store"


def big_hook(size: int) -> bytes:
    req = hook_request("order-sign", "p", BY_NAME["T1"].observations("p"))
    req["padding"] = "x" * size
    import orjson

    return orjson.dumps(req)


def test_declared_length_over_the_limit_is_413_before_reading(hardened):
    assert_413(hardened.post(SIGN, content=big_hook(LIMIT), headers={"Content-Type": "application/json"}))


def test_streamed_body_over_the_limit_is_413(hardened):
    body = big_hook(3 * LIMIT)

    def chunks():  # no Content-Length: chunked transfer
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    assert_413(hardened.post(SIGN, content=chunks(), headers={"Content-Type": "application/json"}))


def test_feedback_over_the_limit_is_413(hardened):
    assert_413(
        hardened.post(
            SIGN + "/feedback", content=b"[" + b"1," * LIMIT + b"1]", headers={"Content-Type": "application/json"}
        )
    )


def test_body_under_the_limit_passes(hardened):
    r = hardened.post(SIGN, content=big_hook(LIMIT // 2), headers={"Content-Type": "application/json"})
    assert r.status_code == 200


# --------------------------------------------------------------------------- response headers
API_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/cds-services", None),  # 200
        ("POST", SIGN, "hook"),  # 200 with cards (PHI)
        ("POST", SIGN, "{not json"),  # 400
        ("POST", "/cds-services/nope", "{}"),  # 404
        ("GET", "/nowhere", None),  # 404 outside the API
        ("PUT", SIGN, None),  # 405
        ("POST", SIGN + "/feedback", "{}"),  # 400
        ("GET", "/openapi.json", None),
    ],
)
def test_every_response_has_api_headers(hardened, method, path, body):
    content = None
    if body == "hook":
        import orjson

        content = orjson.dumps(hook_request("order-sign", "p", BY_NAME["T1"].observations("p")))
    elif body is not None:
        content = body.encode()
    r = hardened.request(method, path, content=content, headers={"Content-Type": "application/json"})
    for name, value in API_HEADERS.items():
        assert r.headers.get(name) == value, (name, r.status_code)


def test_hsts_when_the_public_url_is_https(tmp_path):
    settings = dev_settings(
        service={"public_base_url": "https://cds.example.org"}, feedback={"sqlite_path": str(tmp_path / "f.sqlite3")}
    )
    with TestClient(create_app(settings)) as c:
        assert c.get("/cds-services").headers["strict-transport-security"].startswith("max-age=")


def test_streaming_cap_outside_a_handler_answers_413():
    # The cap also holds when the body is read before any FastAPI handler (another middleware).
    from starlette.testclient import TestClient as RawClient

    from service.web.security import BodyLimitMiddleware

    async def reads_everything(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read"})

    def chunks():
        for _ in range(10):
            yield b"x" * 50

    r = RawClient(BodyLimitMiddleware(reads_everything, max_bytes=100)).post("/", content=chunks())
    assert r.status_code == 413 and r.json()["issue"][0]["code"] == "too-costly"


# --------------------------------------------------------------------------- found by schemathesis
def test_non_string_resource_type_or_status_in_draft_orders_is_not_a_500(client):
    req = hook_request("order-sign", "p", BY_NAME["T1"].observations("p"))
    entry = req["context"]["draftOrders"]["entry"]
    entry[0]["resource"]["resourceType"] = {"not": "a string"}
    entry[1]["resource"]["status"] = ["draft"]
    r = client.post(SIGN, json=req)
    assert r.status_code == 200, r.text


def test_feedback_timestamp_without_a_utc_equivalent_is_400(client):
    item = {
        "card": "c",
        "outcome": "overridden",
        "overrideReason": {"userComment": "x"},
        "outcomeTimestamp": "0001-01-01T00:00:00+01:00",
    }
    r = client.post(SIGN + "/feedback", json={"feedback": [item]})
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
