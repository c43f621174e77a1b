"""`hematotox-cds serve`: run the service with uvicorn; `hematotox-cds cohort`: validate the score on an export."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from service.web.logging_setup import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hematotox-cds", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", default=os.environ.get("HEMATOTOX_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("HEMATOTOX_PORT", "8080")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("HEMATOTOX_WORKERS", "1")))
    serve.add_argument("--log-level", default=os.environ.get("HEMATOTOX_LOG_LEVEL", "info"))
    from service.cohort.cli import add_parser as add_cohort_parser  # argparse only: the analysis loads on use

    add_cohort_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "cohort":
        return _cohort(args, as_program=argv is None)

    import uvicorn

    configure_logging(args.log_level)
    from service.web.settings import load_settings

    settings = load_settings()  # fail fast on a bad config, before binding a port
    if settings.service.development_mode:
        logging.getLogger("hematotox").warning(
            "DEVELOPMENT MODE: hooks are answered without a trusted EHR and http FHIR servers are "
            "allowed. Never run this in production."
        )
    from service.web.metrics import prepare_multiprocess

    prepare_multiprocess(args.workers)  # N > 1 workers: metrics summed over all of them
    uvicorn.run(
        "service.web.cli:create_served_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        **SERVER_OPTIONS,
    )
    return 0


def _cohort(args: argparse.Namespace, *, as_program: bool) -> int:
    from pydantic import ValidationError

    from service.cohort.cli import run
    from service.web.settings import load_settings
    from service.web.site_rules import cohort_rules_from_settings

    try:
        rules = cohort_rules_from_settings(load_settings())
    except ValidationError as exc:
        # Where and what, never the value given: a configuration may hold a database password.
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
        print(f"cohort: the site configuration cannot be used: {where}", file=sys.stderr)
        return 2
    except ValueError as exc:  # an unknown value-set extension (its message names the group, no value)
        print(f"cohort: the site configuration cannot be used: {exc}", file=sys.stderr)
        return 2
    status = run(args, rules)
    if as_program:
        # What is alive now (matplotlib's and SciPy's modules) is freed when the process ends: frozen, the
        # interpreter's final collections skip it (0.24 → 0.03 s at exit). Not for a caller that goes on.
        gc.freeze()
    return status


def create_served_app() -> FastAPI:
    """The app as `serve` runs it: uvicorn's factory, called once in every worker process."""
    import gc

    from service.web.app import create_app

    app = create_app()
    # What is loaded by now (modules, pydantic schemas, settings, the app) lives as long as the process:
    # frozen out of the cyclic GC, its full collections (which large hook bodies trigger) scan only what
    # requests allocate. 1,000-Observation hooks: p99 76 ms -> 8 ms in process (bench/run.py, README).
    gc.freeze()
    return app


# uvicorn settings of the service (bench/bare_app.py runs its baseline with the same ones): uvloop and
# httptools (from uvicorn[standard]) named explicitly, so a missing one fails at start instead of
# silently falling back to the slower pure-Python loop and parser.
SERVER_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "log_config": None,
    "access_log": False,
    "timeout_graceful_shutdown": 20,
}


if __name__ == "__main__":
    sys.exit(main())
