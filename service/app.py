"""The thin HTTP edge: discovery, the two hook services, errors as OperationOutcome."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_hooks.fhir_allowlist import fhir_server_refusal
from cds_hooks.fhir_client import FhirClient
from cds_hooks.models import ORDER_HOOKS, CardsResponse, HookRequest, dump_json, order_context, parse_body
from cds_hooks.openapi import hook_request_schema, install_openapi, json_request_body
from cds_hooks.outcome import CDSHookError, operation_outcome
from cds_hooks.prefetch import KeyMeta, PrefetchUnavailable, lacking, resolve
from cds_hooks.registry import Registry, ServiceDefinition
from service import metrics
from service.feedback import feedback_router
from service.hooks import HT_KEYS, LAB_KEYS, Clinic, cards_for, trigger_for
from service.ops import router as ops_router
from service.paging import lookback_stop
from service.reuse import ReuseCache, issuer_of, reusable_keys, reuse_key
from service.security import install_security
from service.settings import Settings, load_settings

log = logging.getLogger("hematotox.hook")
# The HT keys are always read to the end (within the page cap and deadline): servers sort results
# that have only `issued` (no effective[x]) last, and those still count (spec §1.5), so stopping at
# the lookback could drop the newest platelet count and give a wrong LOW.
EARLY_STOP_KEYS = tuple(k for k in LAB_KEYS if k not in HT_KEYS)

SERVICE_DESCRIPTION = (
    "CAR-HEMATOTOX score and non-relapse-mortality risk factors at lymphodepleting chemotherapy "
    "(fludarabine/cyclophosphamide or bendamustine) before CAR T-cell therapy."
)
EMPTY = b'{"cards":[]}'


def build_registry(clinic: Clinic) -> Registry:
    reg = Registry()
    for hook in ("order-select", "order-sign"):
        reg.register(ServiceDefinition(
            id=f"hematotox-{hook}",
            hook=hook,
            title=f"CAR-HEMATOTOX before CAR-T lymphodepletion ({hook})",
            description=SERVICE_DESCRIPTION,
            prefetch=dict(clinic.templates),
            handler=None,
        ))
    return reg


def json_response(body: bytes | dict, status: int = 200) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def outcome_response(status: int, diagnostics: str, code: str = "processing") -> Response:
    return json_response(operation_outcome(diagnostics, code), status)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    clinic = Clinic.from_settings(settings)
    registry = build_registry(clinic)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        f = settings.fhir
        app.state.fhir = FhirClient(
            timeout=httpx.Timeout(f.deadline_seconds, connect=f.connect_timeout_seconds),
            limits=httpx.Limits(max_connections=f.max_connections, max_keepalive_connections=f.max_connections))
        try:
            yield
        finally:
            await app.state.fhir.aclose()

    app = FastAPI(title="hematotox-cds", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.clinic = clinic
    app.state.registry = registry
    app.state.reuse = ReuseCache(settings.cache.ttl_seconds, settings.cache.max_entries)  # service/reuse.py
    app.include_router(ops_router)  # /healthz, /readyz, /metrics: outside the JWT check
    install_security(app, settings)  # JWT on /cds-services*, CORS, body limit, headers (service/security.py)
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

    @app.post("/cds-services/{service_id}", openapi_extra=json_request_body(hook_request_schema(ORDER_HOOKS)))
    async def call_service(service_id: str, request: Request) -> Response:
        service = registry.get(service_id)
        if service is None:
            raise CDSHookError(404, "not-found", f"no CDS service with id '{service_id}'")
        t_start = time.perf_counter()
        req = parse_body(await request.body(), HookRequest, "hook request")
        if req.hook != service.hook:
            raise CDSHookError(400, "invalid", f"service '{service_id}' answers hook '{service.hook}', "
                                              f"not '{req.hook}'", expression=["hook"])
        ctx = order_context(req)
        now = datetime.now(timezone.utc)
        trigger = trigger_for(ctx, clinic, now)
        timings = {"parse": time.perf_counter() - t_start}
        if trigger is None:
            _log(req, service_id, 200, 0, timings)
            return json_response(EMPTY)
        missing = lacking(clinic.templates, req.prefetch)
        # SSRF guard: a server that is not allowed is never contacted.
        refusal, fhir_server = fhir_server_refusal(app.state.fhir_allowlist, req.fhirServer, missing, set(HT_KEYS))
        if refusal:
            _log(req, service_id, 412, 0, timings)
            return json_response(refusal, 412)
        t = time.perf_counter()
        deadline = time.monotonic() + settings.fhir.deadline_seconds
        # order-select's data serves order-sign (same issuer, server, user, patient, LD orders).
        rkey = reuse_key(issuer_of(request.state), fhir_server, ctx, clinic.vs)
        # Never in place of a client's own first page: it may hold results newer than the cache.
        reused, cache = app.state.reuse.before_resolve(
            req.hook, rkey, lacking(clinic.templates, req.prefetch, paginated=False))
        try:
            resolved = await resolve(
                clinic.templates, req.context, req.prefetch, app.state.fhir, fhir_server,
                req.fhirAuthorization.access_token.get_secret_value() if req.fhirAuthorization else None,
                deadline, required=set(HT_KEYS), max_pages=settings.fhir.max_pages, reuse=reused,
                stop_paging=lookback_stop(trigger.t0, clinic.rules, ctx.patient_id, EARLY_STOP_KEYS))
        except PrefetchUnavailable as exc:
            timings["fetch"] = time.perf_counter() - t
            metrics.count_fhir_fetches(exc.meta)
            _log(req, service_id, 412, 0, timings, _fetch_summary(cache, exc.meta))
            return json_response({"resourceType": "OperationOutcome", "issue": exc.issues()}, 412)
        timings["fetch"] = time.perf_counter() - t
        metrics.count_fhir_fetches(resolved.meta)
        t = time.perf_counter()
        cards = cards_for(trigger, ctx, resolved, clinic)
        timings["score"] = time.perf_counter() - t
        app.state.reuse.after_resolve(req.hook, rkey, resolved, reusable_keys(resolved.meta, cards[0]))
        t = time.perf_counter()
        body = dump_json(CardsResponse.of(cards))  # cards are validated when built
        timings["cards"] = time.perf_counter() - t
        metrics.count_cards(cards)
        _log(req, service_id, 200, len(cards), timings, _fetch_summary(cache, resolved.meta))
        return json_response(body)

    return app


def _fetch_summary(cache: str, meta: dict[str, KeyMeta]) -> dict:
    """Counts only (no keys' contents): the reuse cache, and what the FHIR fallback did."""
    fetched = [m for m in meta.values() if m.source == "fhir"]
    return {"cache": cache, "fhir": {
        "keysFetched": len(fetched), "keysFailed": sum(m.failure is not None for m in fetched),
        "keysReused": sum(m.source == "reused" for m in meta.values()),
        "pages": sum(m.pages for m in fetched), "stoppedEarly": sum(m.stopped for m in fetched)}}


def _log(req: HookRequest, service_id: str, status: int, n_cards: int, timings: dict[str, float],
         fetch: dict | None = None) -> None:
    # One line per hook, keyed by hookInstance; no token, no patient id, no values.
    log.info("hook", extra={"event": {
        "hookInstance": req.hookInstance, "service": service_id, "hook": req.hook, "status": status,
        "cards": n_cards, "ms": {k: round(v * 1000, 2) for k, v in timings.items()}, **(fetch or {})}})
    metrics.observe_hook(service_id, req.hook, sum(timings.values()), status)
