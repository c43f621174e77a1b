"""The Python peer of issue 15: a HealthChain CDS Hooks service that returns one constant card.

It runs in its own virtualenv (bench/.venv-healthchain, made by scripts/bench.sh with PyPI's
`healthchain` 0.16.1), never in the project's: nothing of the project is imported. The app is the
one HealthChain's documentation shows: `HealthChainAPI` with its defaults and a `CDSHooksService`
whose order-select and order-sign handlers return one constant card. HealthChain parses the request
into its own `CDSRequest` model and validates the `CDSResponse` it sends back, which is the work
this peer does; it does no clinical work. The paths are ours (`/cds-services/{id}`), so that wrk
sends the same request to every server. The uvicorn options come from run.py
($BENCH_SERVER_OPTIONS, the JSON of service.web.cli.SERVER_OPTIONS), the same as the service's.

    bench/.venv-healthchain/bin/python bench/healthchain_app.py --port 8182
"""

from __future__ import annotations

import argparse
import gc
import json
import os
from typing import Any

from healthchain.gateway import CDSHooksService, HealthChainAPI
from healthchain.gateway.cds import CDSHooksConfig
from healthchain.models import CDSRequest, CDSResponse
from healthchain.models.responses.cdsresponse import Card

SERVICES = {"order-select": "hematotox-order-select", "order-sign": "hematotox-order-sign"}


def constant_answer(_request: CDSRequest) -> CDSResponse:
    card = Card(
        summary="CAR-HEMATOTOX: constant answer of the benchmark peer",
        indicator="info",
        source={"label": "bench peer"},
    )
    return CDSResponse(cards=[card])


def create_app() -> HealthChainAPI:
    app = HealthChainAPI(title="bench peer")
    cds = CDSHooksService(config=CDSHooksConfig(base_path="", service_path="/cds-services"))
    for hook, service_id in SERVICES.items():
        cds.hook(hook, id=service_id)(constant_answer)
    app.register_service(cds)
    gc.freeze()  # as the service's worker and bench/bare_app.py do
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8182)
    args = parser.parse_args()

    import uvicorn

    options: dict[str, Any] = json.loads(os.environ.get("BENCH_SERVER_OPTIONS") or "{}")
    uvicorn.run(
        "healthchain_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=1,
        app_dir=os.path.dirname(os.path.abspath(__file__)),
        **options,
    )


if __name__ == "__main__":
    main()
