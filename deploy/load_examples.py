#!/usr/bin/env python3
"""Load the example patients into a FHIR server, and turn an example hook into a no-prefetch one.

Python standard library only: it runs in the plain `python:slim` image (deploy/compose.yaml).

    python deploy/load_examples.py load --fhir http://127.0.0.1:8090/fhir [--wait 300] examples/
    python deploy/load_examples.py hook --fhir-server http://hapi:8080/fhir examples/order-sign-high.json

`load` takes the resources of every example's prefetch (the Patient, the lab Observations, any
Conditions) and PUTs them at their own ids in one transaction Bundle per example, so that running it
again changes nothing. `hook` prints the example request without its prefetch and with `fhirServer`
set: the service then fetches the same data from that server (the EHR-without-prefetch path).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

FHIR_JSON = "application/fhir+json"


def example_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    return [f for f in files if _is_hook_request(f)]


def _is_hook_request(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "hook" in data and "context" in data


def resources_of(example: dict) -> list[dict]:
    """The FHIR resources in an example's prefetch, Patient first, each once (by type and id)."""
    found: dict[tuple[str, str], dict] = {}
    for value in (example.get("prefetch") or {}).values():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            items = [e.get("resource") for e in value.get("entry", []) if isinstance(e, dict)]
        else:
            items = [value]
        for resource in items:
            if not isinstance(resource, dict):
                continue
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if rtype and rid and rtype not in ("OperationOutcome", "Bundle"):
                found[(rtype, rid)] = resource
    patient_id = (example.get("context") or {}).get("patientId")
    if patient_id and ("Patient", patient_id) not in found:
        # The labs refer to the patient: a server that checks references needs it to exist.
        found[("Patient", patient_id)] = {"resourceType": "Patient", "id": patient_id}
    return sorted(found.values(), key=lambda r: (r["resourceType"] != "Patient", r["resourceType"], r["id"]))


def transaction(resources: list[dict]) -> dict:
    """A transaction Bundle that PUTs every resource at `Type/id` (an idempotent upsert)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, r['resourceType'] + '/' + r['id'])}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


def without_prefetch(example: dict, fhir_server: str, access_token: str | None = None) -> dict:
    """The example hook request with no prefetch, pointing the service at `fhir_server`."""
    request = {k: v for k, v in example.items() if k not in ("prefetch", "fhirServer", "fhirAuthorization")}
    request["fhirServer"] = fhir_server.rstrip("/")
    if access_token:
        request["fhirAuthorization"] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "hematotox-cds",
        }
    return request


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def post_transaction(base: str, bundle: dict, token: str | None = None, timeout: float = 60.0) -> dict:
    """POST a transaction Bundle to the server base; raise unless every entry succeeded."""
    request = urllib.request.Request(
        base.rstrip("/"), data=json.dumps(bundle).encode(), headers=_headers(token), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:2000].decode(errors="replace")
        raise RuntimeError(f"transaction refused: HTTP {exc.code}: {detail}") from None
    statuses = [e.get("response", {}).get("status", "") for e in body.get("entry", [])]
    if body.get("type") != "transaction-response" or not all(s.startswith("2") for s in statuses):
        raise RuntimeError(f"transaction failed: {statuses or body}")
    return body


def wait_for(base: str, seconds: float) -> None:
    """Wait until GET [base]/metadata answers 200 (HAPI takes a minute or two to start)."""
    until = time.monotonic() + seconds
    while True:
        try:
            request = urllib.request.Request(f"{base.rstrip('/')}/metadata", headers={"Accept": FHIR_JSON})
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= until:
            raise RuntimeError(f"{base} did not answer GET /metadata within {seconds:.0f} s")
        time.sleep(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="PUT the examples' patients and labs into a FHIR server")
    load.add_argument("--fhir", required=True, help="FHIR base URL, e.g. http://hapi:8080/fhir")
    load.add_argument("--token", help="bearer token for the FHIR server, if it needs one")
    load.add_argument("--wait", type=float, default=0, help="seconds to wait for the server to come up")
    load.add_argument("paths", nargs="+", help="example files or directories of them")
    hook = sub.add_parser("hook", help="print an example hook request without prefetch")
    hook.add_argument("--fhir-server", required=True, help="fhirServer the service should query")
    hook.add_argument("--token", help="fhirAuthorization access token to include")
    hook.add_argument("example")
    args = parser.parse_args(argv)

    if args.command == "hook":
        example = json.loads(Path(args.example).read_text())
        print(json.dumps(without_prefetch(example, args.fhir_server, args.token), indent=1))
        return 0
    if args.wait:
        wait_for(args.fhir, args.wait)
    files = example_files(args.paths)
    if not files:
        print("no example hook requests found", file=sys.stderr)
        return 1
    for path in files:
        resources = resources_of(json.loads(path.read_text()))
        post_transaction(args.fhir, transaction(resources), args.token)
        print(f"{path.name}: {len(resources)} resources", flush=True)
    print(f"loaded {len(files)} examples into {args.fhir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
