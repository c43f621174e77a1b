"""Operations endpoints: `/healthz`, `/readyz`, `/metrics`.

They are for the platform (kubelet probes, Docker HEALTHCHECK, Prometheus), not for the EHR, and
sit outside the JWT check of the hook services: the probes carry no token. None of them reveals
patient data, configuration values or error messages (an exception message may hold a database
URL with its password): only check names, `ok`/`fail`/`not configured` and exception type names.

- `/healthz`: the process is alive and its event loop answers. Never touches a dependency, so a
  slow database cannot get healthy pods restarted (liveness).
- `/readyz`: the configuration is loaded and the feedback database (`app.state.feedback_store`,
  service/web/feedback.py) answers a ping within `READY_TIMEOUT_S`; until then the pod is out of the
  Service. Note the consequence: a feedback-database outage takes every replica out of rotation,
  although hooks themselves do not need the database. Sites that prefer hooks to keep answering
  then point the readinessProbe at `/healthz` (deploy/README.md).
  The EHR's FHIR servers are deliberately not checked: they are per request, and hooks with full
  prefetch still work when they are down.
- `/metrics`: Prometheus text format (service/web/metrics.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from service.web import metrics

log = logging.getLogger("hematotox.ops")
router = APIRouter(include_in_schema=False)
READY_TIMEOUT_S = 2.0


def _json(body: dict, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers={"Cache-Control": "no-store"}
    )


@router.get("/healthz")
async def healthz() -> Response:
    return _json({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    state = request.app.state
    checks = {
        "config": "ok" if getattr(state, "settings", None) is not None else "fail",
        "database": await _database(state),
    }
    ready = all(v in ("ok", "not configured") for v in checks.values())
    return _json({"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503)


async def _database(state: object) -> str:
    """`ok`, `not configured` (no feedback store), or `fail: <ExceptionType>`."""
    store = getattr(state, "feedback_store", None)
    if store is None:
        return "not configured"
    try:
        result = await asyncio.wait_for(_ping(store), READY_TIMEOUT_S)
    except Exception as exc:
        log.warning("readiness: database ping failed", extra={"event": {"error": type(exc).__name__}})
        return f"fail: {type(exc).__name__}"
    if result is None:
        return "not configured"
    return "fail: ping returned false" if result is False else "ok"


async def _ping(store: object) -> object:
    """The store's own `ping()` (sync or async) if it has one, else `SELECT 1` on its SQLAlchemy
    engine (service/web/feedback_store.py: `FeedbackStore.engine`); None when it has neither."""
    ping = getattr(store, "ping", None)
    if callable(ping):
        result = await ping() if inspect.iscoroutinefunction(ping) else await run_in_threadpool(ping)
        return await result if inspect.isawaitable(result) else result
    engine = getattr(store, "engine", None)
    if engine is None or not hasattr(engine, "connect"):
        return None
    from sqlalchemy import text

    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return True


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
