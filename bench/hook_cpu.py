"""CPU time per order-select hook in process: the app's ASGI callable driven directly, no socket.

    .venv/bin/python bench/hook_cpu.py [-n 2000] [--body ours|real] [--mode dev|prod|both] [--profile FILE]

Builds the app as `serve` does (service.web.app.create_app, then gc.freeze like the worker), sends
n order-select requests (bench/payloads.py; `real`: the real-server form, 31 KB) straight to the
ASGI app and reports the CPU time (time.process_time) per request: the median of 20 batches, and
the minimum, which the other processes on a shared machine disturb least. `prod` is production mode
with one trusted RS384 EHR and a fresh pre-signed token (new jti) per request. No HTTP server, no
uvicorn: what is left is the service's own work plus FastAPI/Starlette, the part that issue 15 is
about. Logging is configured as `serve` does it (JSON lines), into a temporary file. With
--profile, a cProfile of the last mode is written to FILE (and its top printed).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.payloads import body, real_server_body  # noqa: E402
from service.web.app import create_app  # noqa: E402
from service.web.logging_setup import configure_logging  # noqa: E402
from service.web.settings import Settings  # noqa: E402
from tests.jwt_keys import Ehr, write_jwks  # noqa: E402

BASE = "https://cds.bench.example.org"
PATH = "/cds-services/hematotox-order-select"
BATCHES = 20

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Asgi = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


async def one_request(app: Asgi, payload: bytes, token: str | None) -> int:
    headers = [(b"host", b"cds.bench.example.org"), (b"content-type", b"application/json")]
    headers.append((b"content-length", str(len(payload)).encode()))
    if token:
        headers.append((b"authorization", b"Bearer " + token.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def drive(app: Any, payload: bytes, tokens: list[str] | None, n: int) -> list[float]:
    """CPU seconds per request of each of BATCHES batches (after a warm-up of 50 requests)."""
    async with app.router.lifespan_context(app):
        for _ in range(50):
            await one_request(app, payload, tokens.pop() if tokens else None)
        per_batch = []
        size = max(1, n // BATCHES)
        for _ in range(BATCHES):
            t = time.process_time()
            for _ in range(size):
                status = await one_request(app, payload, tokens.pop() if tokens else None)
                if status != 200:
                    raise SystemExit(f"HTTP {status}")
            per_batch.append((time.process_time() - t) / size)
    return per_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--body", choices=("ours", "real"), default="real")
    parser.add_argument("--mode", choices=("dev", "prod", "both"), default="both")
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    payload = real_server_body(35) if args.body == "real" else body(35)
    ehr = Ehr(alg="RS384", kid="bench-rs384")
    tmp = tempfile.TemporaryDirectory(prefix="hook-cpu-")
    jwks = write_jwks(Path(tmp.name) / "jwks.json", ehr)
    modes = ("dev", "prod") if args.mode == "both" else (args.mode,)
    log_file = open(jwks.parent / "service.log", "w")  # noqa: SIM115 (open for the process's life)
    stdout, sys.stdout = sys.stdout, log_file
    try:
        configure_logging("info")  # its handler writes to the sys.stdout of now: the file
    finally:
        sys.stdout = stdout
    for mode in modes:
        if mode == "dev":
            settings = Settings(service={"development_mode": True, "public_base_url": BASE})
            tokens = None
        else:
            settings = Settings(
                service={"development_mode": False, "public_base_url": BASE},
                trusted_clients=[{"issuer": ehr.issuer, "jwks_file": str(jwks)}],
            )
            tokens = [ehr.token(BASE + PATH) for _ in range(args.n + 60)]
        app = create_app(settings)
        gc.freeze()
        if args.profile and mode == modes[-1]:
            profiler = cProfile.Profile()
            profiler.enable()
            times = asyncio.run(drive(app, payload, tokens, args.n))
            profiler.disable()
            profiler.dump_stats(args.profile)
            pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(25)
        else:
            times = asyncio.run(drive(app, payload, tokens, args.n))
        print(
            f"{mode:4s} {args.body} body ({len(payload)} bytes): CPU per request median "
            f"{statistics.median(times) * 1e6:.0f} µs, min {min(times) * 1e6:.0f} µs"
        )
    log_file.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
