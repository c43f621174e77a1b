#!/usr/bin/env python3
"""Latency of an order-sign hook with NO prefetch against a real FHIR server, compared with the
slowest single query of the ones the service runs for it.

    .venv/bin/python bench/fallback_latency.py [-n 50] [--delay-ms 50]

Starts a local sekmet-fhir (scripts/fhir-server.sh, its own venv, 127.0.0.1, random bearer token)
unless FHIR_BASE_URL (and FHIR_ACCESS_TOKEN) name another server. Loads one realistic patient: 35
Observations, 5 draws each of ANC, hemoglobin, platelets, CRP, ferritin, LDH and creatinine over
the 25 days before LD start. Then, twice:

1. direct: the server as it is;
2. delayed: through a tiny TCP proxy on 127.0.0.1 that delivers every response `--delay-ms` late,
   standing in for network and EHR latency (where a parallel fan-out shows: sekmet-fhir serialises
   its SQLite queries behind one lock, so against it directly parallel ≈ the sum of the queries).

In each mode it times N hooks through the app in-process (httpx.AsyncClient + ASGITransport, the app's
lifespan running, so the app's own FhirClient and connection pool are used), and each of the
service's queries on its own N times with a FhirClient, and prints p50/p95 of each and the ratio
hook / slowest single query. Every hook must answer 200 with the risk card.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

FHIR_JSON = "application/fhir+json"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ANALYTES = {  # analyte: (LOINC, unit, five values, newest first)
    "anc": ("751-8", "10*9/L", (2.1, 2.6, 3.0, 3.4, 3.9)),
    "hemoglobin": ("718-7", "g/dL", (10.8, 11.2, 11.9, 12.3, 12.6)),
    "platelets": ("777-3", "10*9/L", (182, 195, 210, 240, 260)),
    "crp": ("1988-5", "mg/dL", (0.8, 0.6, 0.5, 0.4, 0.4)),
    "ferritin": ("2276-4", "ng/mL", (410, 380, 350, 330, 300)),
    "ldh": ("2532-0", "U/L", (260, 240, 230, 220, 210)),
    "creatinine": ("2160-0", "mg/dL", (0.9, 0.9, 0.8, 0.9, 0.8)),
}
DAYS_BEFORE = (1, 4, 8, 15, 25)


# ------------------------------------------------------------------------------------ helpers


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(base: str, process: subprocess.Popen | None, seconds: float = 60) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/metadata", headers={"Accept": FHIR_JSON}, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{base} did not answer within {seconds}s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def fhir_server():
    """(base, token) of FHIR_BASE_URL, or of a local sekmet-fhir started for this run."""
    external = os.environ.get("FHIR_BASE_URL", "").strip().rstrip("/")
    if external:
        wait_for(external, None, 10)
        yield external, os.environ.get("FHIR_ACCESS_TOKEN") or None
        return
    script = REPO / "scripts" / "fhir-server.sh"
    subprocess.run([str(script), "install"], check=True, capture_output=True, timeout=900)
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="sekmet-bench-") as tmp:
        port = free_port()
        with open(Path(tmp) / "server.log", "wb") as log:
            process = subprocess.Popen(
                [str(script), "serve", str(port), f"{tmp}/data"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "FHIR_SERVER_TOKEN": token},
            )
        try:
            base = f"http://127.0.0.1:{port}/fhir"
            wait_for(base, process)
            yield base, token
        finally:
            stop(process)


@contextmanager
def delaying_proxy(upstream: str, delay_ms: float):
    """A delaying proxy on 127.0.0.1 (this script with --proxy, in its own process); yields its FHIR base."""
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--proxy", str(port), upstream, str(delay_ms)])
    try:
        base = f"http://127.0.0.1:{port}{httpx.URL(upstream).path}"
        wait_for(base, process)
        yield base
    finally:
        stop(process)


def proxy_main(port: int, upstream: str, delay_ms: float) -> None:
    """A TCP proxy to the upstream's host:port that delivers every byte from upstream `delay_ms` late.

    Like network latency (netem) on the response path: each chunk is held for exactly the delay after
    it arrives, in order, so concurrent responses are delayed in parallel and the proxy costs almost
    no CPU (an HTTP-level proxy in Python would add its own serialisation to what is measured).
    The Host header and any absolute URLs in responses still name the upstream: fine for these
    searches, which fit on one page.
    """
    up = httpx.URL(upstream)
    delay = delay_ms / 1000

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lag: float) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, chunk = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(deliver())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((loop.time() + lag, chunk))
        except ConnectionError:
            pass
        queue.put_nowait(None)
        with suppress(ConnectionError):
            await sender

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(up.host, up.port or 80)
        await asyncio.gather(pipe(client_reader, upstream_writer, 0.0), pipe(upstream_reader, client_writer, delay))

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# ------------------------------------------------------------------------------------ data


def load_patient(base: str, token: str | None, t0: datetime) -> tuple[str, list[tuple[str, str]]]:
    patient = f"bench-{uuid.uuid4().hex[:12]}"
    resources: list[dict] = [{"resourceType": "Patient", "id": patient, "birthDate": "1961-05-04", "gender": "male"}]
    for analyte, (code, unit, values) in ANALYTES.items():
        for days, value in zip(DAYS_BEFORE, values, strict=False):
            resources.append(
                {
                    "resourceType": "Observation",
                    "id": f"{patient}-{analyte}-{days}",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "laboratory",
                                }
                            ]
                        }
                    ],
                    "code": {"coding": [{"system": LOINC, "code": code}]},
                    "subject": {"reference": f"Patient/{patient}"},
                    "effectiveDateTime": (t0 - timedelta(days=days, hours=3)).isoformat(),
                    "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
                }
            )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources
        ],
    }
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = httpx.post(base, json=bundle, headers=headers, timeout=60)
    if response.status_code != 200:
        raise SystemExit(f"loading the patient failed: HTTP {response.status_code} {response.text[:500]}")
    return patient, [(r["resourceType"], r["id"]) for r in resources]


def delete(base: str, token: str | None, loaded: list[tuple[str, str]]) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(headers=headers, timeout=30) as http:
        for rtype, rid in reversed(loaded):
            http.delete(f"{base}/{rtype}/{rid}")


def hook_request(patient: str, base: str, token: str | None, t0: datetime) -> dict:
    orders = [
        {
            "resourceType": "MedicationRequest",
            "id": f"ld{i}",
            "status": "draft",
            "intent": "order",
            "subject": {"reference": f"Patient/{patient}"},
            "medicationCodeableConcept": {
                "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code, "display": name}],
                "text": name,
            },
            "dosageInstruction": [{"timing": {"repeat": {"boundsPeriod": {"start": t0.isoformat()}}}}],
        }
        for i, (code, name) in enumerate((("24698", "fludarabine"), ("3002", "cyclophosphamide")), 1)
    ]
    req = {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": base,
        "context": {
            "userId": "Practitioner/bench",
            "patientId": patient,
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]},
        },
    }
    if token:
        req["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "hematotox-cds",
        }
    return req


# ------------------------------------------------------------------------------------ measuring


class _StageTimes(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if record.getMessage() == "hook" and isinstance(event, dict):
            self.lines.append(event)


async def time_hooks(base: str, token: str | None, patient: str, t0: datetime, n: int, tmp: str) -> dict:
    from service.web.app import create_app
    from service.web.settings import Settings

    settings = Settings(
        service={"development_mode": True, "timezone": "UTC"},
        fhir={"allowed_servers": [base], "deadline_seconds": 10.0},
        feedback={"sqlite_path": f"{tmp}/feedback.sqlite3"},
    )
    app = create_app(settings)
    stages = _StageTimes()
    hook_log = logging.getLogger("hematotox.hook")
    hook_log.addHandler(stages)
    hook_log.setLevel(logging.INFO)
    times = []
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hematotox.bench") as client:
                for i in range(n + 3):  # 3 warm-up hooks
                    started = time.perf_counter()
                    response = await client.post(
                        "/cds-services/hematotox-order-sign", json=hook_request(patient, base, token, t0)
                    )
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200 or not response.json().get("cards"):
                        raise SystemExit(f"hook failed: HTTP {response.status_code} {response.text[:500]}")
                    if i >= 3:
                        times.append(elapsed)
    finally:
        hook_log.removeHandler(stages)
    lines = stages.lines[3:]
    assert all(line["fhir"]["keysFetched"] == 10 and line["fhir"]["keysFailed"] == 0 for line in lines), lines[:1]
    return {"hook": times, "fetch": [line["ms"]["fetch"] / 1000 for line in lines]}


async def time_queries(base: str, token: str | None, patient: str, n: int) -> dict[str, list[float]]:
    from cds_hooks.fhir_client import FhirClient
    from cds_hooks.prefetch import render
    from service.cards.order_hooks import prefetch_templates
    from service.clinical.valuesets import value_sets

    queries = {key: render(t, {"patientId": patient}) for key, t in prefetch_templates(value_sets()).items()}
    out: dict[str, list[float]] = {key: [] for key in queries}
    async with FhirClient() as client:
        for i in range(n + 1):  # one warm-up round
            for key, query in queries.items():
                started = time.perf_counter()
                deadline = time.monotonic() + 10
                if "?" in query:
                    await client.search(base, query, token, deadline)
                else:
                    await client.read(base, query, token, deadline)
                if i:
                    out[key].append(time.perf_counter() - started)
    return out


def report(mode: str, hooks: dict, queries: dict[str, list[float]]) -> dict:
    ms = 1000
    print(f"\n== {mode}")
    print(f"{'':24}{'p50 ms':>9}{'p95 ms':>9}")
    print(f"{'hook (no prefetch)':24}{pct(hooks['hook'], 50) * ms:9.1f}{pct(hooks['hook'], 95) * ms:9.1f}")
    print(f"{'  of which fetch stage':24}{pct(hooks['fetch'], 50) * ms:9.1f}{pct(hooks['fetch'], 95) * ms:9.1f}")
    for key, values in queries.items():
        print(f"{'query ' + key:24}{pct(values, 50) * ms:9.1f}{pct(values, 95) * ms:9.1f}")
    slowest = max(queries, key=lambda k: pct(queries[k], 50))
    slow50 = pct(queries[slowest], 50)
    total50 = sum(pct(v, 50) for v in queries.values())
    hook50 = pct(hooks["hook"], 50)
    print(
        f"slowest single query: {slowest} (p50 {slow50 * ms:.1f} ms); sum of all {len(queries)} "
        f"single-query p50s: {total50 * ms:.1f} ms"
    )
    print(
        f"ratio hook p50 / slowest query p50 = {hook50 / slow50:.2f}; hook p50 / sum of queries = "
        f"{hook50 / total50:.2f}"
    )
    return {"hook_p50": hook50, "slowest": slow50, "sum": total50}


async def measure(base: str, token: str | None, patient: str, t0: datetime, n: int, tmp: str):
    hooks = await time_hooks(base, token, patient, t0, n, tmp)
    queries = await time_queries(base, token, patient, n)
    return hooks, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="hooks (and rounds of single queries) per mode")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="delay the proxy adds to each response")
    parser.add_argument("--proxy", nargs=3, metavar=("PORT", "UPSTREAM", "DELAY_MS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        proxy_main(int(args.proxy[0]), args.proxy[1], float(args.proxy[2]))
        return
    logging.getLogger("httpx").setLevel(logging.WARNING)
    t0 = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    print("command:", " ".join([sys.executable, str(Path(__file__).resolve().relative_to(REPO)), *sys.argv[1:]]))
    with fhir_server() as (base, token), tempfile.TemporaryDirectory(prefix="hematotox-bench-") as tmp:
        patient, loaded = load_patient(base, token, t0)
        print(
            f"FHIR server: {base} ({'external' if os.environ.get('FHIR_BASE_URL') else 'local sekmet-fhir'}); "
            f"patient with {len(loaded) - 1} Observations; N={args.n} per mode"
        )
        try:
            direct = report("direct", *asyncio.run(measure(base, token, patient, t0, args.n, tmp)))
            with delaying_proxy(base, args.delay_ms) as proxied:
                delayed = report(
                    f"through a proxy adding {args.delay_ms:g} ms per response",
                    *asyncio.run(measure(proxied, token, patient, t0, args.n, tmp)),
                )
        finally:
            if os.environ.get("FHIR_BASE_URL"):
                delete(base, token, loaded)
    print(
        "\nsummary (p50): direct hook {:.1f} ms vs slowest query {:.1f} ms (sum {:.1f}); delayed hook {:.1f} ms "
        "vs slowest query {:.1f} ms (sum {:.1f})".format(
            direct["hook_p50"] * 1000,
            direct["slowest"] * 1000,
            direct["sum"] * 1000,
            delayed["hook_p50"] * 1000,
            delayed["slowest"] * 1000,
            delayed["sum"] * 1000,
        )
    )


if __name__ == "__main__":
    main()
