"""OpenAPI descriptions of the CDS Hooks request bodies.

The services read their bodies as raw JSON (clients send payloads a strict schema would reject,
see models.py), so FastAPI cannot derive a request body for the OpenAPI document. These schemas
describe what a client sends (CDS Hooks 2.0) for integrators and for schema-driven testing; they
are documentation, not the validation (which stays in models.py and is more lenient).

Plain JSON Schema without `const`, `anyOf` or `not`: schema-driven testing (schemathesis) generates
schema-violating data from these too, and negating those keywords is not always possible.

Nothing in this module knows anything clinical.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .models import ORDER_HOOKS

_STR = {"type": "string", "minLength": 1}
_CODING = {"type": "object", "properties": {"system": _STR, "code": _STR, "display": _STR}}
_REFERENCE = {"type": "object", "properties": {"reference": _STR}}
_RESOURCE = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {
        "resourceType": {"type": "string", "examples": ["MedicationRequest"]},
        "id": _STR,
        "status": _STR,
        "intent": _STR,
        "subject": _REFERENCE,
        "medicationCodeableConcept": {
            "type": "object",
            "properties": {"coding": {"type": "array", "items": _CODING}, "text": _STR},
        },
    },
}
_BUNDLE = {
    "type": "object",
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": _STR,
        "entry": {"type": "array", "items": {"type": "object", "properties": {"fullUrl": _STR, "resource": _RESOURCE}}},
    },
}


def hook_request_schema(hooks: Iterable[str], prefetch_keys: Iterable[str] = ()) -> dict[str, Any]:
    """A CDS Hooks service request (`POST {base}/cds-services/{id}`) for the given hook names, with the
    prefetch keys the services declare (any other key is allowed as well)."""
    names = frozenset(hooks)
    value = {"type": ["object", "null"], "properties": _RESOURCE["properties"]}
    return {
        "type": "object",
        "required": ["hook", "hookInstance", "context"],
        "properties": {
            "hook": {"type": "string", "enum": sorted(names)},
            "hookInstance": {"type": "string", "format": "uuid"},
            "fhirServer": {"type": "string", "format": "uri"},
            "fhirAuthorization": {
                "type": "object",
                "required": ["access_token", "token_type", "expires_in", "scope", "subject"],
                "properties": {
                    "access_token": _STR,
                    "token_type": {"type": "string", "enum": ["Bearer"]},
                    "expires_in": {"type": "integer"},
                    "scope": _STR,
                    "subject": _STR,
                    "patient": _STR,
                },
            },
            "context": {
                "type": "object",
                # draftOrders only for the order hooks: one plain schema for every hook, so only
                # what all of them share is required (patient-view sends patientId, userId, encounterId?).
                "required": ["patientId", "draftOrders"] if names <= ORDER_HOOKS else ["patientId"],
                "properties": {
                    "userId": _STR,
                    "patientId": _STR,
                    "encounterId": _STR,
                    "selections": {"type": "array", "items": _STR},
                    "draftOrders": _BUNDLE,
                },
            },
            "prefetch": {
                # key -> a resource or a searchset Bundle, or null ("looked, found nothing")
                "type": "object",
                "properties": dict.fromkeys(sorted(set(prefetch_keys)), value),
                "additionalProperties": value,
            },
        },
    }


FEEDBACK_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["feedback"],
    "properties": {
        "feedback": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["card", "outcome", "outcomeTimestamp"],
                "properties": {
                    "card": _STR,
                    "outcome": {"type": "string", "enum": ["accepted", "overridden"]},
                    "acceptedSuggestions": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "object", "required": ["id"], "properties": {"id": _STR}},
                    },
                    "overrideReason": {
                        "type": "object",
                        "properties": {"reason": _CODING, "userComment": {"type": "string"}},
                    },
                    "outcomeTimestamp": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}


def json_request_body(schema: dict[str, Any], *, description: str | None = None) -> dict[str, Any]:
    """For a route's `openapi_extra`: a required JSON request body with this schema."""
    body: dict[str, Any] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if description:
        body["description"] = description
    return {"requestBody": body}


def restrict_path_parameter(openapi: dict[str, Any], name: str, values: Iterable[str]) -> dict[str, Any]:
    """Declare the values a path parameter can take (e.g. the registered service ids), in place."""
    allowed = sorted(set(values))
    for item in openapi.get("paths", {}).values():
        for operation in item.values():
            for param in operation.get("parameters", []) if isinstance(operation, dict) else ():
                if param.get("in") == "path" and param.get("name") == name:
                    param.setdefault("schema", {})["enum"] = allowed
    return openapi


def install_openapi(app: Any, service_ids: Iterable[str]) -> None:
    """Make `app.openapi()` (a FastAPI app) list the registered ids as the values of `{service_id}`."""
    ids = list(service_ids)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = restrict_path_parameter(generate(), "service_id", ids)
        return app.openapi_schema

    app.openapi = openapi
