"""The physical limit of the stack: a bare FastAPI app on uvicorn with the service's server settings.

It answers POST /cds-services/{service_id} by reading the body, parsing it as JSON (orjson, as the
service does) and returning a constant cards response (the bytes in $BARE_RESPONSE_FILE: the
service's own answer to the benchmark request, so that both send the same number of bytes). No
middleware, no validation, no logging, no metrics. Like the service's worker, it freezes its start-up
heap out of the cyclic GC (gc.freeze).

    .venv/bin/python bench/bare_app.py --port 8181
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import Response  # noqa: E402


def create_app() -> FastAPI:
    path = os.environ.get("BARE_RESPONSE_FILE")
    constant = Path(path).read_bytes() if path else b'{"cards":[]}'
    app = FastAPI()

    @app.post("/cds-services/{service_id}")
    async def call_service(service_id: str, request: Request) -> Response:
        data = orjson.loads(await request.body())
        if not isinstance(data, dict):
            return Response(b'{"resourceType":"OperationOutcome"}', status_code=400, media_type="application/json")
        return Response(constant, media_type="application/json", headers={"Cache-Control": "no-store"})

    import gc

    gc.freeze()  # as service.web.cli.create_served_app does
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8181)
    args = parser.parse_args()

    import uvicorn

    from service.web.cli import SERVER_OPTIONS

    uvicorn.run("bench.bare_app:create_app", factory=True, host=args.host, port=args.port, workers=1, **SERVER_OPTIONS)


if __name__ == "__main__":
    main()
