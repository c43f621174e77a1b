"""`POST /cds-services/{id}/feedback`: the clinician's outcome of a card (accepted / overridden).

The body is checked against the spec's shape (cds_hooks.models.FeedbackRequest; 400
OperationOutcome when it does not fit), stored as sent and idempotently (service/web/feedback_store.py) and
answered with an empty 200 once it is committed. A repeat of the same feedback is answered 200 too
and stored once. When the database cannot be reached the answer is 503, so that the client retries.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError

from cds_hooks.models import FeedbackRequest, parse_body
from cds_hooks.openapi import FEEDBACK_REQUEST_SCHEMA, json_request_body
from cds_hooks.outcome import CDSHookError
from service.web.feedback_store import FeedbackStore, ReceivedItem
from service.web.settings import Settings

log = logging.getLogger("hematotox.feedback")


def feedback_router(settings: Settings) -> APIRouter:
    """The feedback route, with a lifespan that opens the store and creates its schema."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = FeedbackStore.open(settings.feedback.database_url, settings.feedback.sqlite_path)
        app.state.feedback_store = store
        try:
            await store.create_schema()
            log.info("feedback store ready", extra={"event": {"store": store.description}})
        except (SQLAlchemyError, OSError) as exc:
            # Hooks must keep working without the feedback database: feedback answers 503 (the client
            # retries) and the schema is created on the next feedback call.
            log.error(
                "feedback store unavailable", extra={"event": {"store": store.description, "error": type(exc).__name__}}
            )
        try:
            yield
        finally:
            await store.aclose()

    router = APIRouter(lifespan=lifespan)

    @router.post(
        "/cds-services/{service_id}/feedback",
        openapi_extra=json_request_body(FEEDBACK_REQUEST_SCHEMA, description="CDS Hooks feedback"),
        responses={
            200: {"description": "stored (or stored before)"},
            400: {"description": "OperationOutcome"},
            404: {"description": "OperationOutcome"},
            503: {"description": "OperationOutcome"},
        },
    )
    async def feedback(service_id: str, request: Request) -> Response:
        registry = request.app.state.registry
        if registry.get(service_id) is None:
            raise CDSHookError(404, "not-found", f"no CDS service with id '{service_id}'")
        raw = await request.body()
        body = parse_body(raw, FeedbackRequest, "feedback")
        # The items as sent, for storage (the models re-serialise: "57.700Z" would become "57.700000Z").
        # parse_body accepted this JSON, so it is an object whose "feedback" holds these items in order.
        sent = orjson.loads(raw)["feedback"]
        items = [ReceivedItem(item, as_sent) for item, as_sent in zip(body.feedback, sent, strict=True)]
        store: FeedbackStore = request.app.state.feedback_store
        client = getattr(request.state, "cds_client", None)
        try:
            result = await store.add(service_id, items, client)
        except (SQLAlchemyError, OSError) as exc:
            log.error("feedback not stored", extra={"event": {"service": service_id, "error": type(exc).__name__}})
            raise CDSHookError(503, "transient", "feedback could not be stored now; send it again later") from None
        # Counts only: card ids, suggestions and comments stay in the database.
        log.info(
            "feedback",
            extra={
                "event": {
                    "service": service_id,
                    "items": result.received,
                    "stored": result.stored,
                    "duplicates": result.duplicates,
                }
            },
        )
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    return router
