#!/usr/bin/env python3
"""What a chart opening costs for a patient who is not in a CAR-T course (issue 13): the follow-up service
(`hematotox-follow-up`, patient-view) beside the bare endpoint of bench/bare_app.py.

    .venv/bin/python bench/follow_up_cost.py [--duration 5] [--repeat 3] [--connections 16]

The servers are started as bench/run.py starts them (its helpers: the `hematotox-cds serve` console
script on uvicorn, configured by bench/bench-config.toml, pinned to CPU 0; the bare app answering
with the service's own bytes, `{"cards":[]}`), and driven by wrk (1 thread, bench/post.lua) when it is
installed, else by a one-in-flight httpx loop (per-request time only). The request is what an EHR sends
on every chart open: patient-view with `fhirServer`, `fhirAuthorization` and the one prefetch key the
service declares, answered by the EHR with an empty searchset (no CAR-T administration). The service
must answer `{"cards": []}` without contacting the FHIR server (its `fhirServer` here is a port where
nothing listens: a request to it would fail the hook with 412). Target: ≤ 1.5× the bare per-request time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench.run import BIN, CLIENT_CPU, CONFIG, free_port, median_of, pinned, server, wait_until_quiet, wrk  # noqa: E402

PATH = "/cds-services/hematotox-follow-up"
TARGET = 1.5


def request_body(fhir_server: str) -> bytes:
    """patient-view for a patient without a CAR-T infusion, prefetch answered (empty searchset)."""
    from service.cards.follow_up_hook import INFUSION_KEY

    return json.dumps(
        {
            "hook": "patient-view",
            "hookInstance": "5b0e7c1e-2f4a-4a53-9d0e-3c2b8f1e6a71",
            "fhirServer": fhir_server,
            "fhirAuthorization": {
                "access_token": "bench-token",
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "patient/*.read",
                "subject": "cds-service",
            },
            "context": {"userId": "Practitioner/doc1", "patientId": "not-in-a-course", "encounterId": "enc-1"},
            "prefetch": {INFUSION_KEY: {"resourceType": "Bundle", "type": "searchset", "total": 0}},
        }
    ).encode()


def check_answer(base: str, payload: bytes) -> bytes:
    r = httpx.post(base + PATH, content=payload, headers={"Content-Type": "application/json"}, timeout=30)
    if r.status_code != 200 or r.json() != {"cards": []}:
        raise SystemExit(f"{base}{PATH} did not answer {{'cards': []}}: HTTP {r.status_code} {r.text[:500]}")
    return r.content


def loop(url: str, payload: bytes, seconds: float) -> dict:
    """Without wrk: one request in flight for `seconds`, per-request times (ms) from the client."""
    times = []
    with httpx.Client(base_url=url, headers={"Content-Type": "application/json"}, timeout=10) as client:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.perf_counter()
            client.post(PATH, content=payload)
            times.append((time.perf_counter() - started) * 1000)
    times.sort()

    def pct(p: float) -> float:
        return times[min(len(times) - 1, int(p / 100 * len(times)))]

    return {"rps": len(times) / seconds, "requests": len(times), "p50": pct(50), "p99": pct(99)}


def in_process(payload: bytes, n: int) -> dict[str, float]:
    """Without HTTP, `n` calls each, best of 3 (µs per call), the hook log line written as in production
    (JSON, to /dev/null): the follow-up pipeline alone; the whole app (middlewares, routing, the route)
    for this request and for an unknown service id (404: the same stack, no hook work); the bare app."""
    import asyncio
    import logging

    import bench.bare_app as bare
    from service.web.app import create_app
    from service.web.logging_setup import JsonFormatter
    from service.web.pipeline import FollowUpPipeline
    from service.web.settings import Settings

    os.environ["HEMATOTOX_CONFIG"] = str(CONFIG)
    app = create_app(Settings())
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 (closed with the process)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)
    service = app.state.registry.get("hematotox-follow-up")
    # No FHIR client: the patient is not in a course and the prefetch answered, nothing is fetched.
    pipeline = FollowUpPipeline(app.state.clinic, app.state.settings.fhir, None, app.state.fhir_allowlist)  # type: ignore[arg-type]

    async def asgi(target, path: str) -> int:  # one POST through an ASGI app, as uvicorn would call it
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80), "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                                                     (b"content-length", str(len(payload)).encode())],
        }  # fmt: skip
        messages = [{"type": "http.request", "body": payload, "more_body": False}]
        status = []

        async def receive() -> dict:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await target(scope, receive, send)
        return status[0]

    async def pipeline_call() -> int:
        answer = await pipeline.run(service, payload, "bench")
        assert answer.body == b'{"cards":[]}', answer
        return answer.status

    async def best(call, expect: int) -> float:
        for _ in range(200):
            assert await call() == expect
        rounds = []
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(n):
                await call()
            rounds.append((time.perf_counter() - started) / n * 1e6)
        return min(rounds)

    async def run() -> dict[str, float]:
        # The app's lifespan is not run (it would open the FHIR client and the feedback store, which
        # nothing here uses): the route gets the same pipeline, without a FHIR client.
        app.state.follow_up = pipeline
        bare_app = bare.create_app()
        return {
            "pipeline": await best(pipeline_call, 200),
            "app": await best(lambda: asgi(app, PATH), 200),
            "app_404": await best(lambda: asgi(app, "/cds-services/unknown"), 404),
            "bare": await best(lambda: asgi(bare_app, PATH), 200),
        }

    return asyncio.run(run())


def _json(line: str) -> dict:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, interleaved (median reported)")
    parser.add_argument("--connections", type=int, default=16, help="connections for the throughput runs (wrk)")
    parser.add_argument("--in-process", type=int, default=5000, help="calls per in-process measurement")
    parser.add_argument("--wait-quiet", type=float, default=120.0, help="wait up to this long for test runs to end")
    args = parser.parse_args()
    have_wrk = subprocess.run(["which", "wrk"], capture_output=True).returncode == 0
    if pinned():
        os.sched_setaffinity(0, {CLIENT_CPU})
    # A port on which nothing listens, on the allowlist of bench-config.toml: contacting it would fail.
    payload = request_body(f"http://127.0.0.1:{free_port()}/fhir")
    with tempfile.TemporaryDirectory(prefix="hematotox-follow-up-bench-") as tmpdir:
        tmp = Path(tmpdir)
        body_file = tmp / "patient-view.json"
        body_file.write_bytes(payload)
        sport, bport = free_port(), free_port()
        service_url, bare_url = f"http://127.0.0.1:{sport}", f"http://127.0.0.1:{bport}"
        env = {"HEMATOTOX_CONFIG": str(CONFIG), "HEMATOTOX_FEEDBACK__SQLITE_PATH": str(tmp / "feedback.sqlite3")}
        cmd = [str(BIN / "hematotox-cds"), "serve", "--host", "127.0.0.1", "--port", str(sport), "--workers", "1"]
        with server(cmd, sport, tmp / "service.log", env):
            (tmp / "answer.json").write_bytes(check_answer(service_url, payload))
            bare_cmd = [sys.executable, str(REPO / "bench" / "bare_app.py"), "--port", str(bport)]
            with server(bare_cmd, bport, tmp / "bare.log", {"BARE_RESPONSE_FILE": str(tmp / "answer.json")}):
                check_answer(bare_url, payload)
                quiet = wait_until_quiet(args.wait_quiet)
                print(f"measuring ({quiet}; {'wrk' if have_wrk else 'httpx loop, wrk not installed'})", file=sys.stderr)

                def measure(connections: int) -> dict[str, dict]:
                    runs: dict[str, list[dict]] = {"service": [], "bare": []}
                    for _ in range(args.repeat):
                        for name, url in (("service", service_url), ("bare", bare_url)):
                            if have_wrk:
                                runs[name].append(
                                    wrk(url, body_file, connections, args.duration, PATH, same_core=connections == 1)
                                )
                            else:
                                runs[name].append(loop(url, payload, args.duration))
                    return {k: median_of(v) for k, v in runs.items()}

                for url in (service_url, bare_url):  # warm-up
                    wrk(url, body_file, 1, 1, PATH) if have_wrk else loop(url, payload, 1)
                one = measure(1)
                load = measure(args.connections) if have_wrk else None
        log = (tmp / "service.log").read_text(errors="replace")
    hooks = [line for line in map(_json, log.splitlines()) if line.get("msg") == "hook"]
    if fetched := sum(h.get("fhir", {}).get("keysFetched", 0) for h in hooks):
        raise SystemExit(f"the service fetched {fetched} keys from the FHIR server for a patient not in a course")

    s, b = one["service"], one["bare"]
    ratio = s["p50"] / b["p50"]
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        f"Run {date}, {os.cpu_count()} cores; {quiet}; {args.repeat} runs of {args.duration:g} s interleaved "
        f"(median, ± half the max–min range). Request: patient-view, not in a course, prefetch answered "
        f'({len(payload)} bytes); answer {{"cards": []}}, no FHIR request.',
        "",
        "| measurement | follow-up service | bare FastAPI/uvicorn | service / bare | target | |",
        "|---|---|---|---|---|---|",
        f"| patient-view, not in a course: one in flight, p50 / p99 (ms) | {s['p50']:.2f} / {s['p99']:.2f} "
        f"±{s['spread']['p50'] * 50:.0f}% | {b['p50']:.2f} / {b['p99']:.2f} | {ratio:.2f} (p50) | ≤ {TARGET}× | "
        f"{'met' if ratio <= TARGET else '**missed**'} |",
    ]
    if load:
        ls, lb = load["service"], load["bare"]
        per_request = lb["rps"] / ls["rps"]
        rows.append(
            f"| patient-view, not in a course: throughput, {args.connections} connections (req/s; per-request "
            f"time = 1 / throughput) | {ls['rps']:.0f} ±{ls['spread']['rps'] * 50:.0f}% | {lb['rps']:.0f} | "
            f"{per_request:.2f} (time per request) | ≤ {TARGET}× | {'met' if per_request <= TARGET else '**missed**'} |"
        )
    us = in_process(payload, args.in_process)
    rows += [
        f"| in process, no HTTP (µs per call, best of 3 × {args.in_process}): the whole app | {us['app']:.0f} | "
        f"{us['bare']:.0f} | {us['app'] / us['bare']:.2f} | | |",
        f"| in process: an unknown service id through the same app (404: middlewares, routing, error handler) | "
        f"{us['app_404']:.0f} | {us['bare']:.0f} | {us['app_404'] / us['bare']:.2f} | | |",
        f"| in process: the follow-up pipeline alone (parse → infusions → no course → log line, metrics) | "
        f"{us['pipeline']:.0f} | | | | |",
    ]
    print("\n".join(rows))


if __name__ == "__main__":
    main()
