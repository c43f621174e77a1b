"""A real FHIR R4 server for the integration tests.

By default a local sekmet-fhir (FastAPI + SQLite) is installed into its own venv by
`scripts/fhir-server.sh install`, started on 127.0.0.1 on a free port with a fresh data directory,
and stopped at the end of the session. It enforces a random bearer token (`fhir_access_token`).
With `FHIR_BASE_URL=<base>` (and optionally `FHIR_ACCESS_TOKEN`) the same tests run against that
server instead; the session is skipped if it does not answer, and what the tests loaded is deleted
afterwards. Load data with `load_transaction` and ids from `unique_id`, so runs never collide.

What sekmet-fhir 0.1.1 does (checked by hand and by tests/test_fhir_server_harness.py):
- GET [base]/metadata answers without auth; everything else honours `server_auth` (static bearer
  tokens: `{types: [bearer], tokens: [...]}`), otherwise 401 with an OperationOutcome (code login).
- Transaction Bundles with PUT Type/id entries: atomic, client ids kept, answer transaction-response.
- Token search `code=sys|a,sys|b` (OR list), `patient=`, `date=ge...`, `_sort=-date`, `_count`
  (default 20, max 1000) and `_offset`; absolute `next`/`last` links on base_url.
- POST [type]/_search with a form body (as the CDS Hooks sandbox sends it) gives the same searchset.
- Unknown search parameters are dropped with a `search.mode=outcome` warning entry, unless the request
  says `Prefer: handling=strict` (then 400 + OperationOutcome): FhirClient sends that header.
- Read of an unknown id: 404 + OperationOutcome (not-found). DELETE of a referenced Patient succeeds
  (HAPI refuses it: cleanup deletes in reverse load order).
- Inbound validation is strict: resources must be valid R4 (Observation needs status; unknown
  elements are refused with 400 + OperationOutcome code structure).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "fhir-server.sh"
RUN_ID = uuid.uuid4().hex[:12]
_FHIR_JSON = "application/fhir+json"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_START_TIMEOUT_S = 60.0
_START_ATTEMPTS = 3


@dataclass
class FhirTestServer:
    base_url: str
    access_token: str | None
    external: bool
    loaded: list[tuple[str, str]] = field(default_factory=list)
    # The local server's console log (uvicorn's access lines: one per request it answered); None for
    # an external server. Lets a test assert what the service did, or did not, ask the server.
    log: Path | None = None

    def headers(self) -> dict[str, str]:
        headers = {"Accept": _FHIR_JSON}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        return headers


# base URL -> the session's server, so that load_transaction(base, ...) can record what to clean up.
_SERVERS: dict[str, FhirTestServer] = {}


def unique_id(stem: str) -> str:
    """A FHIR id unique to this run (never purely numeric: HAPI refuses those as client ids)."""
    value = f"{stem}-{RUN_ID}"
    if not _ID.match(value):
        raise ValueError(f"not a valid FHIR id: {value!r}")
    return value


def transaction(resources: Iterable[dict]) -> dict:
    """A transaction Bundle that PUTs each resource at its own Type/id."""
    entries = []
    for resource in resources:
        rtype, rid = resource["resourceType"], resource["id"]
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{rtype}/{rid}')}",
                "resource": resource,
                "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def load_transaction(base: str, bundle: dict, access_token: str | None = None) -> dict:
    """POST a transaction Bundle; fail loudly unless every entry succeeded. Returns the response Bundle."""
    base = base.rstrip("/")
    server = _SERVERS.get(base)
    if access_token is None and server is not None:
        access_token = server.access_token
    headers = {"Accept": _FHIR_JSON, "Content-Type": _FHIR_JSON}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    response = httpx.post(base, json=bundle, headers=headers, timeout=60.0)
    body = response.json() if response.content else {}
    if response.status_code != 200 or body.get("type") != "transaction-response":
        raise AssertionError(f"transaction failed: HTTP {response.status_code}: {response.text[:2000]}")
    statuses = [entry.get("response", {}).get("status", "") for entry in body.get("entry", [])]
    if not all(status.startswith("2") for status in statuses):
        raise AssertionError(f"transaction entries failed: {statuses}")
    if server is not None:
        for entry in bundle.get("entry", []):
            rtype, _, rid = entry["request"]["url"].partition("/")
            server.loaded.append((rtype, rid))
    return body


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirTestServer]:
    external = os.environ.get("FHIR_BASE_URL", "").strip()
    if external:
        server = FhirTestServer(external.rstrip("/"), os.environ.get("FHIR_ACCESS_TOKEN") or None, True)
        if not _answers(server.base_url):
            pytest.skip(
                f"FHIR_BASE_URL={server.base_url} does not answer GET /metadata; unset it to use "
                "the local sekmet-fhir server"
            )
        _SERVERS[server.base_url] = server
        try:
            yield server
        finally:
            _cleanup(server)
            _SERVERS.pop(server.base_url, None)
        return
    yield from _local_server()


@pytest.fixture(scope="session")
def fhir_base_url(fhir_server: FhirTestServer) -> str:
    return fhir_server.base_url


@pytest.fixture(scope="session")
def fhir_access_token(fhir_server: FhirTestServer) -> str | None:
    return fhir_server.access_token


def _local_server() -> Iterator[FhirTestServer]:
    installed = subprocess.run([str(SCRIPT), "install"], capture_output=True, text=True, timeout=900)
    if installed.returncode != 0:
        pytest.fail(f"cannot install sekmet-fhir ({SCRIPT} install):\n{installed.stderr[-3000:]}")
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="sekmet-fhir-") as tmp:
        log_path = Path(tmp) / "server.log"
        process, base = _start(Path(tmp), log_path, token)
        server = FhirTestServer(base, token, external=False, log=log_path)
        _SERVERS[base] = server
        try:
            yield server
        finally:
            _SERVERS.pop(base, None)
            _stop(process)


def _start(tmp: Path, log_path: Path, token: str) -> tuple[subprocess.Popen, str]:
    # A free port can be taken between probing and binding: retry on a fresh one if the server dies.
    for _ in range(_START_ATTEMPTS):
        port = _free_port()
        base = f"http://127.0.0.1:{port}/fhir"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(SCRIPT), "serve", str(port), str(tmp / f"server-{port}")],
                env={**os.environ, "FHIR_SERVER_TOKEN": token},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if _wait_until_up(base, process):
            return process, base
        _stop(process)
    pytest.fail(f"sekmet-fhir did not start; log:\n{log_path.read_text(errors='replace')[-3000:]}")


def _wait_until_up(base: str, process: subprocess.Popen) -> bool:
    until = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < until:
        if process.poll() is not None:
            return False
        if _answers(base, timeout=1.0):
            return True
        time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _answers(base: str, timeout: float = 10.0) -> bool:
    try:
        response = httpx.get(f"{base}/metadata", headers={"Accept": _FHIR_JSON}, timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cleanup(server: FhirTestServer) -> None:
    # Reverse load order, so that referring resources go before what they refer to.
    failed = []
    with httpx.Client(headers=server.headers(), timeout=30.0) as http:
        for rtype, rid in reversed(server.loaded):
            try:
                status = http.delete(f"{server.base_url}/{rtype}/{rid}").status_code
            except httpx.HTTPError as exc:
                failed.append(f"{rtype}/{rid}: {type(exc).__name__}")
                continue
            if status >= 300 and status not in (404, 410):
                failed.append(f"{rtype}/{rid}: HTTP {status}")
    server.loaded.clear()
    if failed:
        warnings.warn(f"could not delete test data from {server.base_url}: {failed}", stacklevel=1)
