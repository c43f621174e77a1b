"""An independent check of a serialised `{"cards": [...]}` response against the CDS Hooks 2.0
rules, written against the JSON (not the pydantic models) so it also catches what the models
would let through. The tests run it on every card the service emits.

Messages are "<JSON path>: <problem>", e.g. "$.cards[0].summary: longer than 139 characters".
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

SUMMARY_MAX = 139
INDICATORS = ("info", "warning", "critical")
SELECTION_BEHAVIORS = ("any", "at-most-one")
ACTION_TYPES = ("create", "update", "delete")
LINK_TYPES = ("absolute", "smart")

# `extension` is accepted on cards only: the spec reserves the name everywhere, but this
# service's models carry it on Card alone, so anywhere else it is a mistake.
RESPONSE_KEYS = {"cards"}
CARD_KEYS = {
    "uuid",
    "summary",
    "detail",
    "indicator",
    "source",
    "suggestions",
    "selectionBehavior",
    "overrideReasons",
    "links",
    "extension",
}
SOURCE_KEYS = {"label", "url", "icon", "topic"}
CODING_KEYS = {"system", "code", "display"}
SUGGESTION_KEYS = {"label", "uuid", "isRecommended", "actions"}
ACTION_KEYS = {"type", "description", "resource", "resourceId"}
LINK_KEYS = {"label", "url", "type", "appContext", "autolaunchable"}

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RELATIVE_REF_RE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9.\-]{1,64}$")


def card_violations(response: Any) -> list[str]:
    """Every rule broken by `response`; [] when it is a valid CDS Hooks response for this service."""
    if not isinstance(response, dict):
        return ["$: the response must be a JSON object"]
    out: list[str] = []
    _walk_empties(response, "$", out)
    if "systemActions" in response:
        out.append("$.systemActions: not allowed (nothing is applied without a clinician)")
    _unknown_keys(response, RESPONSE_KEYS | {"systemActions"}, "$", out)
    response = _as_object(response, "$", out)
    cards = response.get("cards")
    if "cards" not in response:
        out.append("$.cards: missing")
    elif not isinstance(cards, list):
        out.append("$.cards: must be an array")
    else:
        for i, card in enumerate(cards):
            _check_card(card, f"$.cards[{i}]", out)
        _check_unique_uuids(cards, out)
    return out


# --------------------------------------------------------------------------- generic rules
def _walk_empties(value: Any, path: str, out: list[str], *, fhir: bool = False) -> None:
    """null, "", [], {} anywhere; `cards: []` is the one allowed empty. The inside of a CDS
    Hooks `extension` is its owner's business: only non-JSON values are reported
    there. Inside a FHIR `resource`, `extension` is FHIR's own element and walked like the rest."""
    if value is None:
        out.append(f"{path}: null (omit the field instead)")
    elif isinstance(value, str):
        if not value.strip():
            out.append(f"{path}: empty string")
    elif isinstance(value, float) and not math.isfinite(value):
        out.append(f"{path}: non-finite number")
    elif isinstance(value, list):
        if not value and path != "$.cards":
            out.append(f"{path}: empty array")
        for i, item in enumerate(value):
            _walk_empties(item, f"{path}[{i}]", out, fhir=fhir)
    elif isinstance(value, dict):
        if not value:
            out.append(f"{path}: empty object")
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                out.append(f"{path}: object key {key!r} is not a non-empty string")
            elif key == "extension" and not fhir:
                _check_extension(item, f"{path}.extension", out)
            else:
                _walk_empties(item, f"{path}.{key}", out, fhir=fhir or key == "resource")
    elif not isinstance(value, (bool, int, float)):
        out.append(f"{path}: {type(value).__name__} is not a JSON type")


def _check_extension(value: Any, path: str, out: list[str]) -> None:
    if value is None:
        out.append(f"{path}: null (omit the field instead)")
        return
    if not isinstance(value, dict):
        out.append(f"{path}: must be a JSON object")
        return
    if not value:
        out.append(f"{path}: empty object")
    # Inside the extension its owner may give `null` a meaning (e.g. "cannot tell"): the
    # spec's "omit, never null" binds the fields the CDS Hooks spec defines, not an extension's.
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if v is None:
            continue
        elif isinstance(v, float) and not math.isfinite(v):
            out.append(f"{where}: non-finite number")
        elif isinstance(v, dict):
            stack.extend((f"{where}.{k}", item) for k, item in v.items())
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(v))
        elif not isinstance(v, (str, bool, int, float)):
            out.append(f"{where}: {type(v).__name__} is not a JSON type")


def _unknown_keys(obj: dict, allowed: set[str], path: str, out: list[str]) -> None:
    for key in obj:
        if key not in allowed:
            out.append(f"{path}.{key}: unknown key")


def _is_text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _require_text(obj: dict, key: str, path: str, out: list[str]) -> Any:
    if key not in obj:
        out.append(f"{path}.{key}: missing")
    elif not isinstance(obj[key], str):
        out.append(f"{path}.{key}: must be a string")
    return obj.get(key)


def _optional_type(obj: dict, key: str, kind: type, path: str, out: list[str]) -> None:
    if key in obj and obj[key] is not None and not isinstance(obj[key], kind):
        out.append(f"{path}.{key}: must be a {'boolean' if kind is bool else 'string'}")


def _check_url(obj: dict, key: str, path: str, out: list[str]) -> None:
    url = obj.get(key)
    if not isinstance(url, str):
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        out.append(f"{path}.{key}: must be an absolute http(s) URL")


def _check_uuid(obj: dict, path: str, out: list[str]) -> None:
    if obj.get("uuid") is not None and (not isinstance(obj["uuid"], str) or not _UUID_RE.match(obj["uuid"])):
        out.append(f"{path}.uuid: must be a UUID string")


def _as_object(value: Any, path: str, out: list[str]) -> dict | None:
    if isinstance(value, dict):
        # Nulls were already reported by _walk_empties; past that, a null field counts as absent.
        return {k: v for k, v in value.items() if v is not None}
    out.append(f"{path}: must be a JSON object")
    return None


def _as_array(obj: dict, key: str, path: str, out: list[str]) -> list:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        out.append(f"{path}.{key}: must be an array")
        return []
    return value


# ------------------------------------------------------------------------------- structure
def _check_card(value: Any, path: str, out: list[str]) -> None:
    card = _as_object(value, path, out)
    if card is None:
        return
    _unknown_keys(card, CARD_KEYS, path, out)
    _check_uuid(card, path, out)

    summary = _require_text(card, "summary", path, out)
    if isinstance(summary, str) and len(summary) > SUMMARY_MAX:
        out.append(f"{path}.summary: longer than {SUMMARY_MAX} characters ({len(summary)})")
    _optional_type(card, "detail", str, path, out)
    if "indicator" not in card:
        out.append(f"{path}.indicator: missing")
    elif card["indicator"] not in INDICATORS:
        out.append(f"{path}.indicator: must be one of {', '.join(INDICATORS)}")

    if "source" not in card:
        out.append(f"{path}.source: missing")
    else:
        _check_source(card["source"], f"{path}.source", out)

    suggestions = _as_array(card, "suggestions", path, out)
    behavior = card.get("selectionBehavior")
    if "selectionBehavior" in card and behavior not in SELECTION_BEHAVIORS:
        out.append(f"{path}.selectionBehavior: must be one of {', '.join(SELECTION_BEHAVIORS)}")
    if "suggestions" in card and "selectionBehavior" not in card:
        out.append(f"{path}.selectionBehavior: required when suggestions are present")
    if "selectionBehavior" in card and "suggestions" not in card:
        out.append(f"{path}.selectionBehavior: present without suggestions")
    for i, suggestion in enumerate(suggestions):
        _check_suggestion(suggestion, f"{path}.suggestions[{i}]", out)
    recommended = sum(1 for s in suggestions if isinstance(s, dict) and s.get("isRecommended") is True)
    if behavior == "at-most-one" and recommended > 1:
        out.append(f"{path}.suggestions: {recommended} recommended, at most one with 'at-most-one'")

    for i, reason in enumerate(_as_array(card, "overrideReasons", path, out)):
        _check_coding(reason, f"{path}.overrideReasons[{i}]", out, display_required=True)
    for i, link in enumerate(_as_array(card, "links", path, out)):
        _check_link(link, f"{path}.links[{i}]", out)


def _check_source(value: Any, path: str, out: list[str]) -> None:
    source = _as_object(value, path, out)
    if source is None:
        return
    _unknown_keys(source, SOURCE_KEYS, path, out)
    _require_text(source, "label", path, out)
    for key in ("url", "icon"):
        _optional_type(source, key, str, path, out)
        _check_url(source, key, path, out)
    if "topic" in source:
        _check_coding(source["topic"], f"{path}.topic", out, display_required=False)


def _check_coding(value: Any, path: str, out: list[str], *, display_required: bool) -> None:
    coding = _as_object(value, path, out)
    if coding is None:
        return
    _unknown_keys(coding, CODING_KEYS, path, out)
    _require_text(coding, "system", path, out)
    _require_text(coding, "code", path, out)
    if display_required:
        _require_text(coding, "display", path, out)
    else:
        _optional_type(coding, "display", str, path, out)


def _check_suggestion(value: Any, path: str, out: list[str]) -> None:
    suggestion = _as_object(value, path, out)
    if suggestion is None:
        return
    if "actionSelectionBehavior" in suggestion:
        out.append(f"{path}.actionSelectionBehavior: not allowed (STU element this service does not use)")
    _unknown_keys(suggestion, SUGGESTION_KEYS | {"actionSelectionBehavior"}, path, out)
    _require_text(suggestion, "label", path, out)
    _check_uuid(suggestion, path, out)
    _optional_type(suggestion, "isRecommended", bool, path, out)
    for i, action in enumerate(_as_array(suggestion, "actions", path, out)):
        _check_action(action, f"{path}.actions[{i}]", out)


def _check_action(value: Any, path: str, out: list[str]) -> None:
    action = _as_object(value, path, out)
    if action is None:
        return
    _unknown_keys(action, ACTION_KEYS, path, out)
    kind = action.get("type")
    if "type" not in action:
        out.append(f"{path}.type: missing")
    elif kind not in ACTION_TYPES:
        out.append(f"{path}.type: must be one of {', '.join(ACTION_TYPES)}")
    _require_text(action, "description", path, out)
    if kind == "delete":
        if "resource" in action:
            out.append(f"{path}.resource: a delete action takes resourceId, not resource")
        ref = action.get("resourceId")
        if not isinstance(ref, str) or not _RELATIVE_REF_RE.match(ref):
            out.append(f"{path}.resourceId: a delete action needs a relative reference 'Type/id'")
    elif kind in ("create", "update"):
        if "resourceId" in action:
            out.append(f"{path}.resourceId: a {kind} action takes the whole resource, not resourceId")
        resource = action.get("resource")
        if not isinstance(resource, dict):
            out.append(f"{path}.resource: a {kind} action needs a resource object")
        else:
            if not _is_text(resource.get("resourceType")):
                out.append(f"{path}.resource.resourceType: missing")
            if kind == "update" and not isinstance(resource.get("id"), str):
                out.append(f"{path}.resource.id: an update needs the resource id")


def _check_link(value: Any, path: str, out: list[str]) -> None:
    link = _as_object(value, path, out)
    if link is None:
        return
    _unknown_keys(link, LINK_KEYS, path, out)
    _require_text(link, "label", path, out)
    _require_text(link, "url", path, out)
    _check_url(link, "url", path, out)
    if "type" not in link:
        out.append(f"{path}.type: missing")
    elif link["type"] not in LINK_TYPES:
        out.append(f"{path}.type: must be one of {', '.join(LINK_TYPES)}")
    if "appContext" in link:
        _optional_type(link, "appContext", str, path, out)
        if link.get("type") != "smart":
            out.append(f"{path}.appContext: only allowed on links of type 'smart'")
    _optional_type(link, "autolaunchable", bool, path, out)


def _check_unique_uuids(cards: list, out: list[str]) -> None:
    first_seen: dict[str, str] = {}

    def note(uid: Any, where: str) -> None:
        if not isinstance(uid, str):
            return
        if uid in first_seen:
            out.append(f"{where}: uuid {uid} already used at {first_seen[uid]}")
        else:
            first_seen[uid] = where

    for i, card in enumerate(cards):
        if not isinstance(card, dict):
            continue
        note(card.get("uuid"), f"$.cards[{i}].uuid")
        suggestions = card.get("suggestions")
        for j, suggestion in enumerate(suggestions if isinstance(suggestions, list) else []):
            if isinstance(suggestion, dict):
                note(suggestion.get("uuid"), f"$.cards[{i}].suggestions[{j}].uuid")
