"""Logs are JSON lines correlated by hookInstance, and never hold a token, a JWT or a lab value.

The service runs under uvicorn (access log on, every logger at DEBUG) with the production logging
setup; a full hook fetches labs from a local FHIR server with the EHR's access token, and every byte
written to stdout/stderr during the run is searched for the secrets and the values.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
import uvicorn

from service.web.app import create_app
from service.web.logging_setup import configure_logging
from tests.cases import hook_request, obs, searchset
from tests.conftest import dev_settings
from tests.jwt_keys import Ehr, bearer, write_jwks

PATIENT = "pt-7f3a9c51"
HOOK_INSTANCE = "5b0d8a3e-7c1f-4b6a-9e2d-1f4c3b2a7d90"
ACCESS_TOKEN = "ya29.FHIR-ACCESS-TOKEN-d41d8cd98f00b204"
COMMENT = "Pt refused: daughter Jane Roe 555-0199"
# Distinctive values: if one of these strings is in the log, a lab value leaked.
LABS = {
    "anc": obs("anc", "751-8", 3.173, "10*9/L", patient=PATIENT),
    "hemoglobin": obs("hb", "718-7", 12.347, "g/dL", patient=PATIENT),
    "platelets": obs("plt", "777-3", 187.349, "10*9/L", patient=PATIENT),
    "crp": obs("crp", "1988-5", 0.737, "mg/dL", patient=PATIENT),
    "ferritin": obs("fer", "2276-4", 4321.917, "ng/mL", patient=PATIENT),
    "ldh": obs("ldh", "2532-0", 287.431, "U/L", patient=PATIENT),
    "creatinine": obs("cre", "2160-0", 1.137, "mg/dL", patient=PATIENT),
}
VALUES = ["3.173", "12.347", "187.349", "0.737", "4321.917", "287.431", "1.137"]


class FhirStub:
    """Answers Observation searches by code, Patient reads and empty Condition searches; records
    the Authorization header it was sent."""

    def __init__(self) -> None:
        stub = self
        self.authorizations: list[str] = []
        self.paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                stub.authorizations.append(self.headers.get("Authorization", ""))
                stub.paths.append(self.path)
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                resource_path = parts.path.split("/fhir/", 1)[-1]
                if resource_path.startswith("Patient/"):
                    body = {"resourceType": "Patient", "id": PATIENT, "birthDate": "1960-01-01", "gender": "female"}
                elif resource_path == "Observation":
                    codes = {c.split("|")[-1] for c in ",".join(query.get("code", [""])).split(",")}
                    body = searchset([o for o in LABS.values() if o["code"]["coding"][0]["code"] in codes])
                else:
                    body = searchset([])
                raw = orjson.dumps(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64  # the service opens one connection per missing key, in parallel

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    named = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
        for n in list(logging.root.manager.loggerDict)
    }
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    for n, (handlers, lvl, propagate) in named.items():
        lg = logging.getLogger(n)
        lg.handlers[:], lg.propagate = handlers, propagate
        lg.setLevel(lvl)


def test_full_hook_leaves_no_token_jwt_or_lab_value_in_the_logs(tmp_path, capfd, restore_logging):
    fhir = FhirStub()
    ehr = Ehr(alg="RS384", kid="rs-log")
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    settings = dev_settings(
        service={"public_base_url": public},
        trusted_clients=[{"issuer": ehr.issuer, "jwks_file": str(write_jwks(tmp_path / "jwks.json", ehr))}],
        fhir={"allowed_servers": [fhir.base]},
        feedback={"sqlite_path": str(tmp_path / "feedback.sqlite3")},
    )
    configure_logging("debug")  # the production setup, at its most talkative
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=True, log_level="debug", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    tokens: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)

        def jwt_for(path: str) -> dict:
            tokens.append(ehr.token(public + path))
            return bearer(tokens[-1])

        sign = "/cds-services/hematotox-order-sign"
        # Prefetch carries three labs; the others are fetched from the FHIR server with the token.
        prefetch = {k: searchset([LABS[k]]) for k in ("anc", "hemoglobin", "platelets")}
        req = hook_request("order-sign", PATIENT, None, prefetch=prefetch, fhir_server=fhir.base, token=ACCESS_TOKEN)
        req["hookInstance"] = HOOK_INSTANCE
        with httpx.Client(base_url=public, timeout=10) as http:
            assert http.get("/cds-services", headers=jwt_for("/cds-services")).status_code == 200
            r = http.post(sign, json=req, headers=jwt_for(sign))
            assert r.status_code == 200, r.text
            assert r.json()["cards"] and "4321" in r.text  # the values did flow through the service
            fb = {
                "feedback": [
                    {
                        "card": r.json()["cards"][0]["uuid"],
                        "outcome": "overridden",
                        "overrideReason": {"userComment": COMMENT},
                        "outcomeTimestamp": "2024-03-10T10:00:00Z",
                    }
                ]
            }
            assert http.post(sign + "/feedback", json=fb, headers=jwt_for(sign + "/feedback")).status_code == 200
            # Failures log too: a replayed JWT, a malformed body, an expired token.
            assert http.post(sign, json=req, headers=bearer(tokens[1])).status_code == 401
            assert http.post(sign, content=b'{"labs": 4321.917', headers=jwt_for(sign)).status_code == 400
            expired = ehr.token(public + sign, exp=int(time.time()) - 600, iat=int(time.time()) - 900)
            tokens.append(expired)
            assert http.post(sign, json=req, headers=bearer(expired)).status_code == 401
        assert fhir.authorizations and all(a == f"Bearer {ACCESS_TOKEN}" for a in fhir.authorizations)
        assert len(fhir.paths) >= 7  # every missing key was fetched with the token
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        fhir.close()

    out, err = capfd.readouterr()
    text = out + err
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) >= 5, text
    records = [json.loads(line) for line in lines]  # JSON lines, every one of them
    hook_lines = [r for r in records if r.get("msg") == "hook"]
    assert hook_lines and all(r["hookInstance"] == HOOK_INSTANCE for r in hook_lines)
    assert all(r["caller"] == ehr.issuer for r in hook_lines)  # who called: the verified issuer
    assert any(r.get("logger") == "uvicorn.access" for r in records)  # uvicorn's lines were captured too

    secrets = [ACCESS_TOKEN, COMMENT, "Jane Roe", PATIENT]
    for token in tokens:
        secrets += [token, *token.split(".")]  # the whole JWT, its header, payload and signature
    for secret in secrets:
        assert secret not in text, f"leaked into the logs: {secret[:40]}"
    for value in VALUES:
        assert value not in text, f"lab value {value} leaked into the logs"
