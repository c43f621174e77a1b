"""CDS Hooks 2.0 wire models: lenient on what clients send, strict on what we emit.

Request side: real clients (the official sandbox, EHRs) send payloads a strict schema would
reject, so the request is read as plain data and only the fields used are checked.
Response side: a malformed card is silently dropped or shown as an error by the EHR, so every
spec rule is enforced when the model is built, where a test or the developer sees it.

Nothing in this module knows anything clinical.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from .outcome import CDSHookError, Issue

_M = TypeVar("_M", bound=BaseModel)

SUMMARY_MAX = 139  # spec: "<140-character summary"

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RELATIVE_REF_RE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9.\-]{1,64}$")
_SERVICE_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9._\-]*$"  # one URL path segment, no escaping needed
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


# --------------------------------------------------------------------------- value checks
def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty or blank")
    return v


def _absolute_url(v: str) -> str:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in v):
        raise ValueError("must be an absolute http(s) URL")
    return v


def _uuid(v: str) -> str:
    if not _UUID_RE.match(v):
        raise ValueError("must be a UUID (8-4-4-4-12 hex)")
    return v


def _loggable(v: str) -> str:
    # hook and hookInstance are written to logs for correlation: no line breaks or escapes.
    if _CONTROL_RE.search(v):
        raise ValueError("must not contain control characters")
    return v


Text = Annotated[str, AfterValidator(_not_blank)]
Url = Annotated[str, AfterValidator(_absolute_url)]
Uuid = Annotated[str, AfterValidator(_uuid)]
Summary = Annotated[str, StringConstraints(max_length=SUMMARY_MAX), AfterValidator(_not_blank)]
LogSafe = Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(_loggable)]


def json_problems(value: Any, path: str, *, allow_empty: bool, allow_null: bool = False) -> list[str]:
    """Where `value` is not plain JSON, or holds null (and, unless allow_empty, "" [] {}).

    Catches what pydantic's JSON serialiser would otherwise turn silently into something
    else: a Decimal becomes a string, NaN becomes null, a tuple becomes an array.
    """
    if _plain_json(value, allow_empty, allow_null):
        return []  # the common case, checked without building a path per node
    problems: list[str] = []
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if v is None:
            if not allow_null:
                problems.append(f"{where}: null")
        elif isinstance(v, (bool, int)):
            continue
        elif isinstance(v, float):
            if not math.isfinite(v):
                problems.append(f"{where}: non-finite number")
        elif isinstance(v, str):
            if not allow_empty and not v.strip():
                problems.append(f"{where}: empty string")
        elif isinstance(v, dict):
            if not allow_empty and not v:
                problems.append(f"{where}: empty object")
            for k, item in v.items():
                if not isinstance(k, str) or not k:
                    problems.append(f"{where}: object key {k!r} is not a non-empty string")
                else:
                    stack.append((f"{where}.{k}", item))
        elif isinstance(v, list):
            if not allow_empty and not v:
                problems.append(f"{where}: empty array")
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(v))
        else:
            problems.append(f"{where}: {type(v).__name__} is not a JSON type")
    return sorted(problems)


def _plain_json(value: Any, allow_empty: bool, allow_null: bool) -> bool:
    """True exactly when json_problems(value, ...) would find nothing (the same checks, no messages)."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is str:
            if not allow_empty and not v.strip():
                return False
        elif t is dict:
            if not allow_empty and not v:
                return False
            for k in v:
                if type(k) is not str or not k:
                    return False
            extend(v.values())
        elif t is list:
            if not allow_empty and not v:
                return False
            extend(v)
        elif t is int or t is bool:
            continue
        elif t is float:
            if not math.isfinite(v):
                return False
        elif v is None:
            if not allow_null:
                return False
        else:
            return False  # subclasses and everything else: let json_problems judge and explain
    return True


# ============================================================================ request side
class FhirAuthorization(BaseModel):
    """`fhirAuthorization`. Unknown keys are accepted but dropped: in an authorization
    object they may well be further credentials (refresh_token, id_token) that must not
    end up in a repr or a log line."""

    model_config = ConfigDict(extra="ignore")

    access_token: SecretStr
    token_type: str | None = None
    expires_in: int | None = None
    scope: str | None = None
    subject: str | None = None
    patient: str | None = None


class HookRequest(BaseModel):
    """The body POSTed to a service. Unknown top-level keys (and `extension`) are kept."""

    model_config = ConfigDict(extra="allow")

    hook: LogSafe
    hookInstance: LogSafe
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None

    def __repr_args__(self) -> Iterator[tuple[str, Any]]:
        # context/prefetch hold patient data; a request must be safe to put in a log line.
        yield "hook", self.hook
        yield "hookInstance", self.hookInstance
        yield "fhirServer", self.fhirServer
        yield "fhirAuthorization", "<present>" if self.fhirAuthorization else None


# --------------------------------------------------------------------------- order context
@dataclass(frozen=True, slots=True)
class OrderContext:
    """What order-select / order-sign put in `context`, read as plain data.

    `selections` is [] when the client sent none: for order-select that means "nothing
    selected", so nothing is selected and the clinical side gives no cards.
    `draft_orders` are the resources as dicts (R4 MedicationRequest, DSTU2 MedicationOrder,
    whatever came); `order_refs[i]` holds every string a selection may use for draft_orders[i].
    """

    hook: str
    patient_id: str
    user_id: str | None
    encounter_id: str | None
    selections: list[str]
    draft_orders: list[dict]
    order_refs: list[frozenset[str]] = field(repr=False)


ORDER_HOOKS = frozenset({"order-select", "order-sign"})


def _ref_forms(ref: str) -> set[str]:
    """The spellings under which one reference can be matched.

    "MedicationRequest/1", ".../fhir/MedicationRequest/1/_history/2" -> "MedicationRequest/1";
    "urn:uuid:..." and bare ids are only ever equal to themselves.
    """
    ref = ref.strip()
    if not ref:
        return set()
    ref = ref.split("/_history/", 1)[0]
    forms = {ref}
    if not ref.startswith("urn:") and "/" in ref:
        parts = [p for p in ref.split("/") if p]
        if len(parts) >= 2:
            forms.add(f"{parts[-2]}/{parts[-1]}")
    return forms


def _order_refs(resource: dict, full_url: Any) -> frozenset[str]:
    refs: set[str] = set()
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(rid, str) and rid:
        refs.add(rid)
        if isinstance(rtype, str) and rtype:
            refs.add(f"{rtype}/{rid}")
    if isinstance(full_url, str):
        refs |= _ref_forms(full_url)
    return frozenset(refs)


def _read_draft_orders(raw: Any) -> list[tuple[dict, Any]]:
    """(resource, fullUrl) pairs from a Bundle (with or without `type`), a bare list of
    resources or entries, or a single resource. Entries without a resource are skipped."""
    if isinstance(raw, dict):
        is_bundle = raw.get("resourceType") == "Bundle" or ("entry" in raw and "resourceType" not in raw)
        items = raw.get("entry") if is_bundle else [raw]
        if items is None:
            items = []
        elif isinstance(items, dict):
            items = [items]
    elif isinstance(raw, list):
        items = raw
    else:
        raise CDSHookError(
            400,
            "invalid",
            "context.draftOrders must be a Bundle or an array of resources",
            expression=["context.draftOrders"],
        )
    if not isinstance(items, list):
        raise CDSHookError(
            400, "invalid", "context.draftOrders.entry must be an array", expression=["context.draftOrders.entry"]
        )
    pairs: list[tuple[dict, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if "resourceType" in item:
            pairs.append((item, None))
        elif isinstance(item.get("resource"), dict):
            pairs.append((item["resource"], item.get("fullUrl")))
    return pairs


def _read_selections(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise CDSHookError(
            400, "invalid", "context.selections must be an array of references", expression=["context.selections"]
        )
    return [s.strip() for s in raw if isinstance(s, str) and s.strip()]


def _opt_str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def order_context(request: HookRequest) -> OrderContext:
    """Read the order-select / order-sign context; CDSHookError(400) names every missing field."""
    hook = request.hook
    if hook not in ORDER_HOOKS:
        raise CDSHookError(400, "not-supported", f"hook {hook!r} has no order context", expression=["hook"])
    ctx = request.context
    issues: list[Issue] = []
    patient_id = ctx.get("patientId")
    if not isinstance(patient_id, str) or not patient_id.strip():
        issues.append(
            Issue(
                f"context.patientId (a non-empty string) is required for {hook}",
                "required",
                expression=("context.patientId",),
            )
        )
    if ctx.get("draftOrders") is None:
        issues.append(
            Issue(f"context.draftOrders is required for {hook}", "required", expression=("context.draftOrders",))
        )
    if issues:
        first, *more = issues
        raise CDSHookError(400, first.code, first.diagnostics, expression=first.expression, more=more)

    assert isinstance(patient_id, str)  # for mypy: a non-str patientId raised above
    pairs = _read_draft_orders(ctx["draftOrders"])
    return OrderContext(
        hook=hook,
        patient_id=patient_id.strip(),
        user_id=_opt_str(ctx.get("userId")),
        encounter_id=_opt_str(ctx.get("encounterId")),
        selections=_read_selections(ctx.get("selections")) if hook == "order-select" else [],
        draft_orders=[res for res, _ in pairs],
        order_refs=[_order_refs(res, url) for res, url in pairs],
    )


PATIENT_VIEW = "patient-view"


@dataclass(frozen=True, slots=True)
class PatientContext:
    """What patient-view puts in `context`: the chart that was opened (and by whom, where)."""

    hook: str
    patient_id: str
    user_id: str | None
    encounter_id: str | None


def patient_context(request: HookRequest) -> PatientContext:
    """Read the patient-view context; CDSHookError(400) when `patientId` is missing."""
    if request.hook != PATIENT_VIEW:
        raise CDSHookError(
            400, "not-supported", f"hook {request.hook!r} has no patient-view context", expression=["hook"]
        )
    ctx = request.context
    patient_id = ctx.get("patientId")
    if not isinstance(patient_id, str) or not patient_id.strip():
        raise CDSHookError(
            400,
            "required",
            "context.patientId (a non-empty string) is required for patient-view",
            expression=["context.patientId"],
        )
    return PatientContext(
        hook=request.hook,
        patient_id=patient_id.strip(),
        user_id=_opt_str(ctx.get("userId")),
        encounter_id=_opt_str(ctx.get("encounterId")),
    )


def selected_orders(ctx: OrderContext) -> list[dict]:
    """order-sign: every draft order. order-select: only the selected ones (none if no selections)."""
    if ctx.hook != "order-select":
        return list(ctx.draft_orders)
    wanted: set[str] = set()
    for sel in ctx.selections:
        wanted |= _ref_forms(sel)
    return [order for order, refs in zip(ctx.draft_orders, ctx.order_refs, strict=False) if refs & wanted]


# =========================================================================== response side
class _Out(BaseModel):
    # strict: no "true" -> True or 1 -> "1" coercion on data we put on the wire.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


_Item = TypeVar("_Item")
_nonempty_list = Annotated[list[_Item], Field(min_length=1)]  # a generic alias: _nonempty_list[Card]


class Coding(_Out):
    system: Text
    code: Text
    display: Text | None = None


class OverrideReason(Coding):
    display: Text  # cds-resp-4: the client shows it to the clinician


class Source(_Out):
    label: Text
    url: Url | None = None
    icon: Url | None = None
    topic: Coding | None = None


class Link(_Out):
    label: Text
    url: Url
    type: Literal["absolute", "smart"]
    appContext: Text | None = None
    autolaunchable: bool | None = None

    @model_validator(mode="after")
    def _app_context_only_on_smart(self) -> Self:  # cds-resp-3
        if self.appContext is not None and self.type != "smart":
            raise ValueError("appContext is only allowed on links of type 'smart'")
        return self


class Action(_Out):
    """create/update carry the whole `resource`; delete carries `resourceId` ("Type/id")."""

    type: Literal["create", "update", "delete"]
    description: Text
    resource: dict[str, Any] | None = None
    resourceId: Text | None = None

    @model_validator(mode="after")
    def _shape_per_type(self) -> Self:
        if self.type == "delete":  # cds-resp-2
            if self.resource is not None:
                raise ValueError("a delete action takes resourceId, not resource")
            if self.resourceId is None or not _RELATIVE_REF_RE.match(self.resourceId):
                raise ValueError("a delete action needs resourceId as a relative reference 'Type/id'")
            return self
        if self.resourceId is not None:
            raise ValueError(f"a {self.type} action takes the whole resource, not resourceId")
        if self.resource is None:
            raise ValueError(f"a {self.type} action needs a resource")
        if not isinstance(self.resource.get("resourceType"), str) or not self.resource["resourceType"]:
            raise ValueError("action resource needs a resourceType")
        if self.type == "update" and not isinstance(self.resource.get("id"), str):
            raise ValueError("an update action's resource needs its id")
        problems = json_problems(self.resource, "resource", allow_empty=False)  # FHIR JSON has no empties
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Suggestion(_Out):
    label: Text
    uuid: Uuid | None = None
    isRecommended: bool | None = None
    actions: _nonempty_list[Action] | None = None


class Card(_Out):
    uuid: Uuid | None = None
    summary: Summary
    detail: Text | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: _nonempty_list[Suggestion] | None = None
    selectionBehavior: Literal["any", "at-most-one"] | None = None
    overrideReasons: _nonempty_list[OverrideReason] | None = None
    links: _nonempty_list[Link] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _card_rules(self) -> Self:
        if self.suggestions is None:
            if self.selectionBehavior is not None:
                raise ValueError("selectionBehavior without suggestions")
        else:
            if self.selectionBehavior is None:  # cds-resp-6
                raise ValueError("selectionBehavior is required when suggestions are present")
            recommended = sum(1 for s in self.suggestions if s.isRecommended)
            if self.selectionBehavior == "at-most-one" and recommended > 1:  # cds-resp-1
                raise ValueError("at most one suggestion may be recommended with selectionBehavior 'at-most-one'")
            ids = [s.uuid for s in self.suggestions if s.uuid is not None]
            if len(ids) != len(set(ids)):
                raise ValueError("suggestion uuids must be unique")
        if self.extension is not None:
            # The extension's inner shape belongs to its owner (placeholders like {} are
            # allowed there); it must still be a non-empty object of plain JSON.
            if not self.extension:
                raise ValueError("extension must not be an empty object")
            # An extension's owner may give null a meaning ("cannot tell"); see validate.py.
            problems = json_problems(self.extension, "extension", allow_empty=True, allow_null=True)
            if problems:
                raise ValueError("; ".join(problems))
        return self


class CardsResponse(_Out):
    cards: list[Card]  # the one place an empty array is valid: "no decision support"

    @classmethod
    def of(cls, cards: list[Card]) -> CardsResponse:
        """CardsResponse(cards=cards) for Card instances, without checking every card a second time.

        pydantic re-runs a model's "after" validators whenever an instance is passed to a field, so
        CardsResponse(cards=...) would repeat each card's rules (and its extension check); the cards
        were checked when they were built, so only the response's own rule is checked here."""
        if all(type(card) is Card for card in cards):
            response = cls.model_construct(cards=list(cards))
            try:
                # pydantic types a validator as its decorator's proxy; on the class it is the method
                return response._unique_uuids()  # type: ignore[operator]
            except ValueError:
                pass
        return cls(cards=cards)  # raises the ValidationError that names the problem

    @model_validator(mode="after")
    def _unique_uuids(self) -> Self:
        seen: set[str] = set()
        for card in self.cards:
            for uid in [card.uuid, *(s.uuid for s in card.suggestions or ())]:
                if uid is None:
                    continue
                if uid in seen:
                    raise ValueError(f"uuid {uid} is used more than once in the response")
                seen.add(uid)
        return self


class ServiceDescriptor(_Out):
    hook: Text
    id: Annotated[str, StringConstraints(pattern=_SERVICE_ID_RE)]
    title: Text | None = None
    description: Text
    prefetch: Annotated[dict[Text, Text], Field(min_length=1)] | None = None
    usageRequirements: Text | None = None


class DiscoveryResponse(_Out):
    services: list[ServiceDescriptor]  # the spec allows [] for a server hosting no services

    @field_validator("services")
    @classmethod
    def _unique_ids(cls, services: list[ServiceDescriptor]) -> list[ServiceDescriptor]:
        ids = [s.id for s in services]
        if len(ids) != len(set(ids)):
            raise ValueError("service ids must be unique")
        return services


# =========================================================================== feedback (in)
class _In(BaseModel):
    model_config = ConfigDict(extra="allow")


class FeedbackCoding(_In):
    """The reason a client echoes back; lenient (display and even system are often dropped)."""

    code: Text
    system: str | None = None
    display: str | None = None


class FeedbackOverrideReason(_In):
    reason: FeedbackCoding | None = None
    userComment: str | None = Field(default=None, repr=False)  # clinician free text: may hold PHI

    @model_validator(mode="after")
    def _reason_or_comment(self) -> Self:  # cds-fb-3
        if self.reason is None and not (self.userComment or "").strip():
            raise ValueError("overrideReason needs a reason, a userComment, or both")
        return self


class AcceptedSuggestion(_In):
    id: Text


class FeedbackItem(_In):
    card: Text
    outcome: Literal["accepted", "overridden"]  # cds-fb-1
    acceptedSuggestions: _nonempty_list[AcceptedSuggestion] | None = None
    overrideReason: FeedbackOverrideReason | None = None
    outcomeTimestamp: datetime

    @field_validator("outcomeTimestamp")
    @classmethod
    def _as_utc(cls, v: datetime) -> datetime:
        # The spec says UTC; a client that drops the "Z" still means UTC.
        try:
            return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 has no UTC datetime
            raise ValueError("outcomeTimestamp is out of range") from None

    @model_validator(mode="after")
    def _outcome_consistency(self) -> Self:
        if self.outcome == "accepted":
            if self.acceptedSuggestions is None:  # cds-fb-2
                raise ValueError("an 'accepted' outcome requires acceptedSuggestions")
            if self.overrideReason is not None:
                raise ValueError("overrideReason is only valid with outcome 'overridden'")
        elif self.acceptedSuggestions is not None:
            raise ValueError("acceptedSuggestions is only valid with outcome 'accepted'")
        return self


class FeedbackRequest(_In):
    feedback: _nonempty_list[FeedbackItem]


# ============================================================================ serialising
def dump(model: BaseModel) -> dict:
    """JSON-ready dict. Models reject empty values at construction, so dropping None is all
    that is needed for "omit, never null/empty"."""
    return model.model_dump(mode="json", exclude_none=True)


def dump_json(model: BaseModel) -> bytes:
    """Same content as dump(), as JSON bytes straight from pydantic-core (no str round trip)."""
    return model.__pydantic_serializer__.to_json(model, exclude_none=True)


# ============================================================================ reading a body
def parse_body(raw: bytes, model: type[_M], what: str) -> _M:
    """A JSON request body as `model`, or CDSHookError(400) naming only the fields at fault.

    Field paths only: pydantic's messages quote the input, which may hold patient data.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CDSHookError(400, "structure", "request body is not JSON") from None
    if not isinstance(data, dict):
        raise CDSHookError(400, "structure", "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or what for e in exc.errors()})[:20]
        raise CDSHookError(400, "invalid", f"invalid {what}: " + ", ".join(fields), expression=fields) from None
