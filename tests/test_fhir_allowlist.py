"""No SSRF: a fhirServer that is not allowed is never contacted (412), whatever it looks like."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from cds_hooks.fhir_allowlist import FhirServerAllowlist, fhir_server_refusal, parse_server_url
from service.web.app import create_app
from tests.cases import BY_NAME, hook_request, ld_orders, prefetch_for
from tests.conftest import dev_settings
from tests.jwt_keys import BASE, Ehr, bearer, write_jwks

SIGN = "/cds-services/hematotox-order-sign"
ALLOWED = ["https://ehr.example.org/fhir", "https://ehr.example.org:8443/r4/", "https://[::1]:9443/fhir"]


@pytest.mark.parametrize(
    "url",
    [
        "https://ehr.example.org/fhir",
        "https://ehr.example.org/fhir/",
        "https://EHR.Example.ORG/fhir",
        "HTTPS://ehr.example.org:443/fhir",
        "https://ehr.example.org./fhir",
        "https://ehr.example.org/fhir/R4",
        "https://ehr.example.org:8443/r4",
        "https://[::1]:9443/fhir",
    ],
)
def test_allowed(url):
    assert FhirServerAllowlist(ALLOWED).allows(url)


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "ehr.example.org/fhir",
        "//ehr.example.org/fhir",
        "http://ehr.example.org/fhir",  # https required outside development mode
        "https://ehr.example.org.evil.com/fhir",  # lookalike suffix
        "https://evil-ehr.example.org/fhir",
        "https://ehr.example.org@evil.com/fhir",  # userinfo: the host is evil.com
        "https://evil.com@ehr.example.org/fhir",  # userinfo at all
        "https://ehr.example.org:443@evil.com/fhir",
        "https://ehr.example.org/fhirx",  # path prefix must end at a segment
        "https://ehr.example.org/",  # above the allowed base
        "https://ehr.example.org/fhir/../admin",  # dot segments
        "https://ehr.example.org/fhir/%2e%2e/admin",  # escaped dot segments
        "https://ehr.example.org/fhir%2fx",
        "https://ehr.example.org\\@evil.com/fhir",  # backslash: parsers disagree
        "https://ehr.example.org:8080/fhir",  # another port
        "https://ehr.example.org:8443/r4x",
        "https://ehr.example.org/fhir?x=1",
        "https://ehr.example.org/fhir#x",
        "https://ehr.example.org /fhir",
        "https://ehr.example.org\t/fhir",
        "https://ehr.exаmple.org/fhir",  # Cyrillic 'а' (IDN homograph)
        "https://ehr.example.org:99999/fhir",
        "https://ehr.example.org:-1/fhir",
        "ftp://ehr.example.org/fhir",
        "file:///etc/passwd",
        "https://[::1]:9444/fhir",
    ],
)
def test_not_allowed(url):
    assert not FhirServerAllowlist(ALLOWED).allows(url)


def test_http_only_in_development_mode_and_any_port_entries():
    dev = FhirServerAllowlist(["http://127.0.0.1:*"], require_https=False)
    assert dev.allows("http://127.0.0.1:8090/fhir") and dev.allows("http://127.0.0.1/fhir")
    assert not dev.allows("http://127.0.0.2:8090/fhir") and not dev.allows("http://localhost:8090/fhir")
    assert not FhirServerAllowlist(["http://127.0.0.1:*"]).allows("http://127.0.0.1:8090/fhir")
    assert parse_server_url("http://127.0.0.1:*") is None  # a wildcard only in the configuration


@pytest.mark.parametrize(
    "entry",
    [
        "https://ehr.example.org/fhir?x",
        "https://u:p@ehr.example.org",
        "ehr.example.org",
        "https://ehr.example.org/../x",
    ],
)
def test_bad_allowlist_entries_fail_at_start(entry):
    with pytest.raises(ValueError):
        FhirServerAllowlist([entry])


def test_refusal_only_when_a_required_key_would_be_fetched():
    allow = FhirServerAllowlist(["https://ehr.example.org/fhir"])
    evil = "https://evil.example.org/fhir"
    # a required key missing: 412, and no server to use
    refusal, server = fhir_server_refusal(allow, evil, {"anc", "ecog"}, {"anc"})
    assert refusal["resourceType"] == "OperationOutcome" and server is None
    # only optional keys missing: no 412, but the server is dropped (never contacted)
    assert fhir_server_refusal(allow, evil, {"ecog"}, {"anc"}) == (None, None)
    # nothing missing, or an allowed server: go on with the server as sent
    assert fhir_server_refusal(allow, evil, set(), {"anc"}) == (None, evil)
    ok = "https://ehr.example.org/fhir"
    assert fhir_server_refusal(allow, ok, {"anc"}, {"anc"}) == (None, ok)


# --------------------------------------------------------------------------- a real listener
class Listener:
    """A tiny HTTP server on 127.0.0.1 that counts every connection and request it gets and answers
    FHIR-ish JSON, so that a request that did reach it would succeed."""

    def __init__(self) -> None:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                listener.requests.append(self.path)
                body = b'{"resourceType":"Bundle","type":"searchset","entry":[]}'
                if self.path.split("?")[0].rstrip("/").split("/")[-2:-1] == ["Patient"]:
                    body = b'{"resourceType":"Patient","id":"p"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64  # the service opens one connection per missing key, in parallel

            def process_request(self, request, client_address):
                listener.connections += 1
                super().process_request(request, client_address)

        self.requests: list[str] = []
        self.connections = 0
        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Listener:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    with Listener() as server:
        yield server


def app_client(tmp_path, allowed: list[str], development_mode: bool = True) -> TestClient:
    settings = dev_settings(
        service={"development_mode": development_mode},
        fhir={"allowed_servers": allowed, "deadline_seconds": 2.0},
        feedback={"sqlite_path": str(tmp_path / "f.sqlite3")},
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


def no_prefetch_hook(fhir_server: str) -> dict:
    return hook_request("order-sign", "p", None, fhir_server=fhir_server, token="token-for-the-ehr-only")


def test_the_listener_is_contacted_when_allowed(tmp_path, listener):
    # The control: the same request to an allowed server does reach the listener.
    base = f"http://127.0.0.1:{listener.port}/fhir"
    with app_client(tmp_path, [base]) as c:
        c.post(SIGN, json=no_prefetch_hook(base))
    assert listener.requests


# (fhirServer sent, allowed_servers) for a listener on port P: each fhirServer leads to the listener,
# and a naive string-prefix check against the allowed entry would let it through.
TRICKS = {
    "not-listed": ("http://127.0.0.1:{P}/fhir", "https://ehr.example.org/fhir"),
    "dot-segments": ("http://127.0.0.1:{P}/fhir/../other", "http://127.0.0.1:{P}/fhir"),
    "escaped-dots": ("http://127.0.0.1:{P}/fhir/%2e%2e/other", "http://127.0.0.1:{P}/fhir"),
    "segment-prefix": ("http://127.0.0.1:{P}/fhirx", "http://127.0.0.1:{P}/fhir"),
    "userinfo": ("http://127.0.0.1:1@127.0.0.1:{P}/fhir", "http://127.0.0.1:1"),
    "other-name": ("http://localhost:{P}/fhir", "http://127.0.0.1:{P}/fhir"),
    "backslash": ("http://127.0.0.1:{P}\\@127.0.0.1:1/fhir", "http://127.0.0.1:1/fhir"),
}


def assert_not_allowed_412(r) -> None:
    assert r.status_code == 412, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert "not allowed" in issue["diagnostics"] and issue["expression"] == ["fhirServer"]


@pytest.mark.parametrize("trick", list(TRICKS))
def test_disallowed_fhir_server_receives_zero_requests(tmp_path, listener, trick):
    sent, allowed = (u.replace("{P}", str(listener.port)) for u in TRICKS[trick])
    with app_client(tmp_path, [allowed]) as c:
        assert_not_allowed_412(c.post(SIGN, json=no_prefetch_hook(sent)))
    assert listener.connections == 0 and listener.requests == []


def test_only_optional_keys_missing_answers_without_contacting_a_disallowed_server(tmp_path, listener):
    # Full lab prefetch, the optional ECOG key absent: the risk card is still given, ECOG is
    # "cannot tell", and the disallowed server hears nothing.
    from tests.cases import BY_NAME, prefetch_for

    pre = prefetch_for(BY_NAME["T9"].observations("p"), "p")
    del pre["ecog"]  # the optional key the hook lacks
    req = hook_request(
        "order-sign",
        "p",
        None,
        prefetch=pre,
        fhir_server=f"http://127.0.0.1:{listener.port}/fhir",
        token="token-for-the-ehr-only",
    )
    with app_client(tmp_path, ["https://ehr.example.org/fhir"]) as c:
        r = c.post(SIGN, json=req)
    assert r.status_code == 200, r.text
    risk = r.json()["cards"][0]["extension"]["hematotox-cds"]
    assert risk["hematotox"]["confirmed"]["group"] == "high" and risk["nrm"]["ecog"] is None
    assert listener.connections == 0


def test_http_fhir_server_is_never_contacted_outside_development_mode(tmp_path, listener):
    base = f"http://127.0.0.1:{listener.port}/fhir"
    ehr = Ehr()
    settings = dev_settings(
        service={"development_mode": False, "public_base_url": BASE},
        trusted_clients=[{"issuer": ehr.issuer, "jwks_file": str(write_jwks(tmp_path / "jwks.json", ehr))}],
        fhir={"allowed_servers": [base]},
        feedback={"sqlite_path": str(tmp_path / "f.sqlite3")},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.post(SIGN, json=no_prefetch_hook(base), headers=bearer(ehr.token(BASE + SIGN)))
    assert_not_allowed_412(r)
    assert listener.connections == 0


def test_complete_prefetch_with_a_disallowed_server_needs_no_contact(tmp_path, listener):
    # A fhirServer that is not allowed only matters when something would be fetched from it.
    pre = prefetch_for(BY_NAME["T1"].observations("p"), "p")
    pre["ecog"] = None  # every key answered: nothing to fetch
    req = hook_request(
        "order-sign", "p", None, prefetch=pre, fhir_server=f"http://127.0.0.1:{listener.port}/fhir", token="tok"
    )
    with app_client(tmp_path, []) as c:
        r = c.post(SIGN, json=req)
    assert r.status_code == 200 and r.json()["cards"]
    assert listener.connections == 0


def test_no_trigger_no_contact(tmp_path, listener):
    req = no_prefetch_hook(f"http://127.0.0.1:{listener.port}/fhir")
    req["context"]["draftOrders"]["entry"] = [{"resource": o} for o in ld_orders("p", drugs=("3002",))]
    with app_client(tmp_path, []) as c:
        r = c.post(SIGN, json=req)
    assert r.status_code == 200 and r.json() == {"cards": []}
    assert listener.connections == 0
