"""The thin HTTP edge: discovery, the hook services, errors as OperationOutcome.

A hook route reads the body and the verified caller, hands both to its pipeline
(service/web/pipeline.py) and writes what comes back.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import request_response

from cds_hooks.fhir_client import FhirClient
from cds_hooks.models import ORDER_HOOKS, PATIENT_VIEW
from cds_hooks.openapi import hook_request_schema, install_openapi, json_request_body
from cds_hooks.outcome import CDSHookError, operation_outcome
from cds_hooks.registry import Registry, ServiceDefinition
from service.cards.follow_up_hook import infusion_templates
from service.cards.order_hooks import Clinic
from service.web.feedback import feedback_router
from service.web.ops import router as ops_router
from service.web.pipeline import FollowUpPipeline, OrderHookPipeline, json_bytes
from service.web.rationale import rationale_router
from service.web.reuse import ReuseCache, issuer_of
from service.web.security import install_security
from service.web.settings import Settings, load_settings
from service.web.site import clinic_from_settings

log = logging.getLogger("hematotox.hook")
SERVICE_DESCRIPTION = (
    "CAR-HEMATOTOX score and non-relapse-mortality risk factors at lymphodepleting chemotherapy "
    "(fludarabine/cyclophosphamide or bendamustine) before CAR T-cell therapy."
)
FOLLOW_UP_ID = "hematotox-follow-up"
FOLLOW_UP_DESCRIPTION = (
    "After CAR T-cell infusion (day 0 to +100): the hematotoxicity course so far (days of severe "
    "neutropenia, current run, recovery phenotype) and what is due (antibacterial and antifungal "
    "prophylaxis, stem-cell boost awareness, G-CSF, blood counts). No card outside a course."
)


def build_registry(clinic: Clinic) -> Registry:
    reg = Registry()
    for hook in ("order-select", "order-sign"):
        reg.register(
            ServiceDefinition(
                id=f"hematotox-{hook}",
                hook=hook,
                title=f"CAR-HEMATOTOX before CAR-T lymphodepletion ({hook})",
                description=SERVICE_DESCRIPTION,
                prefetch=dict(clinic.templates),
                handler=None,
            )
        )
    reg.register(
        ServiceDefinition(
            id=FOLLOW_UP_ID,
            hook=PATIENT_VIEW,
            title="CAR-T hematotoxicity follow-up (day 0 to +100)",
            description=FOLLOW_UP_DESCRIPTION,
            # Only what finds a CAR-T infusion: EHRs prefetch every key on every chart open.
            prefetch=infusion_templates(clinic.vs, clinic.follow_up),
            handler=None,
        )
    )
    return reg


def json_response(body: bytes | dict[str, object], status: int = 200) -> Response:
    return Response(
        json_bytes(body), status_code=status, media_type="application/json", headers={"Cache-Control": "no-store"}
    )


def outcome_response(status: int, diagnostics: str, code: str = "processing") -> Response:
    return json_response(operation_outcome(diagnostics, code), status)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    clinic = clinic_from_settings(settings)
    registry = build_registry(clinic)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        f = settings.fhir
        app.state.fhir = FhirClient(
            timeout=httpx.Timeout(f.deadline_seconds, connect=f.connect_timeout_seconds),
            limits=httpx.Limits(max_connections=f.max_connections, max_keepalive_connections=f.max_connections),
        )
        app.state.pipeline = OrderHookPipeline(clinic, f, app.state.fhir, app.state.fhir_allowlist, app.state.reuse)
        app.state.follow_up = FollowUpPipeline(clinic, f, app.state.fhir, app.state.fhir_allowlist)
        try:
            yield
        finally:
            await app.state.fhir.aclose()

    app = FastAPI(title="hematotox-cds", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.clinic = clinic
    app.state.registry = registry
    app.state.reuse = ReuseCache(settings.cache.ttl_seconds, settings.cache.max_entries)  # service/web/reuse.py
    app.include_router(ops_router)  # /healthz, /readyz, /metrics: outside the JWT check
    app.include_router(rationale_router())  # /rationale: the cards' "full rationale" link, public
    install_security(app, settings)  # JWT on /cds-services*, CORS, body limit, headers (service/web/security.py)
    app.include_router(feedback_router(settings))  # POST /cds-services/{id}/feedback
    install_openapi(app, [s.id for s in registry])

    @app.exception_handler(CDSHookError)
    async def _cds_error(_: Request, exc: CDSHookError) -> Response:
        return json_response(exc.outcome(), exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = "not-found" if exc.status_code == 404 else "processing"
        return outcome_response(exc.status_code, str(exc.detail), code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return outcome_response(400, "request is not valid", "invalid")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")  # the trace goes to our log, never to the caller
        return outcome_response(500, "internal error", "exception")

    @app.get("/cds-services")
    async def discovery() -> Response:
        return json_response(registry.discovery())

    hooks = ORDER_HOOKS | {PATIENT_VIEW}

    keys = {key for s in registry for key in s.prefetch}
    request_schema = hook_request_schema(hooks, keys)

    @app.post("/cds-services/{service_id}", openapi_extra=json_request_body(request_schema))
    async def call_service(service_id: str, request: Request) -> Response:
        service = registry.get(service_id)
        if service is None:
            raise CDSHookError(404, "not-found", f"no CDS service with id '{service_id}'")
        pipeline = app.state.follow_up if service.hook == PATIENT_VIEW else app.state.pipeline
        answer = await pipeline.run(service, await request.body(), issuer_of(request.state))
        return json_response(answer.body, answer.status)

    serve_plain(app, "/cds-services/{service_id}", call_service)
    return app


def serve_plain(app: FastAPI, path: str, endpoint: Callable[..., Awaitable[Response]]) -> None:
    """Serve `path` with Starlette's plain request/response wrapper instead of FastAPI's handler.

    The route stays a FastAPI route, so it is matched and documented (OpenAPI) as before; only what
    runs for a request changes: `endpoint(request=..., **path parameters as strings)`. The hook
    endpoint takes the bare Request (it reads its body as bytes itself) and a string, so FastAPI's
    dependency and validation layer had nothing to do, and still cost ~55 µs of CPU a request
    (bench/hook_cpu.py). Exceptions reach the same handlers (Starlette's wrapper uses the app's)."""

    async def plain(request: Request) -> Response:
        return await endpoint(request=request, **request.path_params)

    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path == path and "POST" in (route.methods or ()):
            route.app = request_response(plain)
            return
    raise LookupError(f"no POST route {path}")
