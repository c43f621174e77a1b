"""cds_hooks.validate.card_violations: every rule has a failing example, and the validator
agrees with the strict response models."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cds_hooks.models import CardsResponse, dump
from cds_hooks.validate import card_violations

U1 = "8f7c2b4e-1d3a-4f5b-9c6d-7e8f9a0b1c2d"
U2 = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
U3 = "11111111-2222-4333-8444-555555555555"


def valid_response() -> dict:
    return {
        "cards": [
            {
                "uuid": U1,
                "summary": "A summary the clinician reads at a glance",
                "detail": "| a | b |\n|---|---|\n| 1 | 2 |",
                "indicator": "warning",
                "source": {
                    "label": "Paper",
                    "url": "https://doi.org/10.1182/blood.2020010543",
                    "icon": "https://example.org/icon.png",
                    "topic": {"system": "http://example.org/topics", "code": "t", "display": "Topic"},
                },
                "suggestions": [
                    {
                        "label": "Do it",
                        "uuid": U2,
                        "isRecommended": True,
                        "actions": [
                            {
                                "type": "create",
                                "description": "Create",
                                "resource": {
                                    "resourceType": "ServiceRequest",
                                    "status": "draft",
                                    "extension": [{"url": "http://example.org/ext", "valueString": "fhir extension"}],
                                },
                            },
                            {
                                "type": "update",
                                "description": "Update",
                                "resource": {"resourceType": "MedicationRequest", "id": "m1"},
                            },
                            {"type": "delete", "description": "Delete", "resourceId": "MedicationRequest/m2"},
                        ],
                    },
                    {"label": "Or that", "isRecommended": False},
                ],
                "selectionBehavior": "at-most-one",
                "overrideReasons": [{"system": "http://example.org/override", "code": "c", "display": "Not relevant"}],
                "links": [
                    {"label": "App", "url": "https://app.example/launch", "type": "smart", "appContext": "x"},
                    {"label": "Doc", "url": "https://example.org/doc", "type": "absolute", "autolaunchable": False},
                ],
                "extension": {"org.example": {"rulesetVersion": "1", "nrm": {}, "components": []}},
            },
            {"uuid": U3, "summary": "Second", "indicator": "info", "source": {"label": "Other"}},
        ]
    }


def test_valid_response_has_no_violations():
    assert card_violations(valid_response()) == []
    assert card_violations(json.loads(json.dumps(valid_response()))) == []


def test_empty_cards_is_valid():
    assert card_violations({"cards": []}) == []


def test_valid_response_is_also_accepted_by_the_models():
    assert dump(CardsResponse.model_validate(valid_response())) == valid_response()


def _card(r):
    return r["cards"][0]


def _sugg(r):
    return r["cards"][0]["suggestions"][0]


def _action(r, i=0):
    return r["cards"][0]["suggestions"][0]["actions"][i]


def _link(r, i=0):
    return r["cards"][0]["links"][i]


def _set(get, key, value):
    def mutate(r):
        get(r)[key] = value

    return mutate


def _del(get, key):
    def mutate(r):
        del get(r)[key]

    return mutate


CASES = [
    # response shape
    ("cards missing", _del(lambda r: r, "cards"), "$.cards: missing"),
    ("cards not a list", _set(lambda r: r, "cards", {}), "$.cards: must be an array"),
    (
        "systemActions",
        _set(lambda r: r, "systemActions", [{"type": "delete", "description": "d", "resourceId": "X/1"}]),
        "$.systemActions: not allowed",
    ),
    ("unknown top-level key", _set(lambda r: r, "warnings", "x"), "$.warnings: unknown key"),
    ("card not an object", lambda r: r["cards"].append("card"), "$.cards[2]: must be a JSON object"),
    ("unknown card key", _set(_card, "selectionBehaviour", "any"), "$.cards[0].selectionBehaviour: unknown key"),
    # summary
    ("summary missing", _del(_card, "summary"), "$.cards[0].summary: missing"),
    ("summary empty", _set(_card, "summary", ""), "$.cards[0].summary: empty string"),
    ("summary blank", _set(_card, "summary", "   "), "$.cards[0].summary: empty string"),
    ("summary not a string", _set(_card, "summary", 42), "$.cards[0].summary: must be a string"),
    ("summary 140 chars", _set(_card, "summary", "x" * 140), "$.cards[0].summary: longer than 139 characters (140)"),
    ("detail not a string", _set(_card, "detail", ["x"]), "$.cards[0].detail: must be a string"),
    # indicator
    ("indicator missing", _del(_card, "indicator"), "$.cards[0].indicator: missing"),
    ("indicator invalid", _set(_card, "indicator", "hard-stop"), "$.cards[0].indicator: must be one of"),
    # source
    ("source missing", _del(_card, "source"), "$.cards[0].source: missing"),
    ("source not object", _set(_card, "source", "Paper"), "$.cards[0].source: must be a JSON object"),
    ("source label missing", _del(lambda r: _card(r)["source"], "label"), "$.cards[0].source.label: missing"),
    (
        "source url relative",
        _set(lambda r: _card(r)["source"], "url", "/about"),
        "$.cards[0].source.url: must be an absolute http(s) URL",
    ),
    (
        "source icon not a URL",
        _set(lambda r: _card(r)["source"], "icon", "icon.png"),
        "$.cards[0].source.icon: must be an absolute http(s) URL",
    ),
    (
        "topic without code",
        _del(lambda r: _card(r)["source"]["topic"], "code"),
        "$.cards[0].source.topic.code: missing",
    ),
    ("unknown source key", _set(lambda r: _card(r)["source"], "logo", "x"), "$.cards[0].source.logo: unknown key"),
    # uuid
    ("card uuid malformed", _set(_card, "uuid", "123"), "$.cards[0].uuid: must be a UUID string"),
    ("suggestion uuid malformed", _set(_sugg, "uuid", 7), "$.cards[0].suggestions[0].uuid: must be a UUID string"),
    (
        "duplicate card uuids",
        lambda r: r["cards"][1].update(uuid=U1),
        "$.cards[1].uuid: uuid " + U1 + " already used at $.cards[0].uuid",
    ),
    (
        "card uuid reused by a suggestion",
        lambda r: _card(r)["suggestions"][1].update(uuid=U3),
        "$.cards[1].uuid: uuid " + U3 + " already used at $.cards[0].suggestions[1].uuid",
    ),
    # suggestions and selectionBehavior
    (
        "suggestions without selectionBehavior",
        _del(_card, "selectionBehavior"),
        "$.cards[0].selectionBehavior: required when suggestions are present",
    ),
    (
        "selectionBehavior invalid",
        _set(_card, "selectionBehavior", "all"),
        "$.cards[0].selectionBehavior: must be one of",
    ),
    (
        "selectionBehavior without suggestions",
        lambda r: r["cards"][1].update(selectionBehavior="any"),
        "$.cards[1].selectionBehavior: present without suggestions",
    ),
    (
        "suggestions not an array",
        _set(_card, "suggestions", {"label": "x"}),
        "$.cards[0].suggestions: must be an array",
    ),
    (
        "two recommended with at-most-one",
        lambda r: _card(r)["suggestions"][1].update(isRecommended=True),
        "$.cards[0].suggestions: 2 recommended, at most one",
    ),
    ("suggestion without label", _del(_sugg, "label"), "$.cards[0].suggestions[0].label: missing"),
    (
        "isRecommended not boolean",
        _set(_sugg, "isRecommended", "yes"),
        "$.cards[0].suggestions[0].isRecommended: must be a boolean",
    ),
    (
        "actionSelectionBehavior",
        _set(_sugg, "actionSelectionBehavior", "any"),
        "$.cards[0].suggestions[0].actionSelectionBehavior: not allowed",
    ),
    # actions
    ("action without type", _del(_action, "type"), "$.cards[0].suggestions[0].actions[0].type: missing"),
    (
        "action type invalid",
        _set(_action, "type", "patch"),
        "$.cards[0].suggestions[0].actions[0].type: must be one of",
    ),
    (
        "action without description",
        _del(_action, "description"),
        "$.cards[0].suggestions[0].actions[0].description: missing",
    ),
    (
        "create without resource",
        _del(_action, "resource"),
        "$.cards[0].suggestions[0].actions[0].resource: a create action needs a resource object",
    ),
    (
        "create resource without resourceType",
        _del(lambda r: _action(r)["resource"], "resourceType"),
        "$.cards[0].suggestions[0].actions[0].resource.resourceType: missing",
    ),
    (
        "create with resourceId",
        _set(_action, "resourceId", "ServiceRequest/1"),
        "$.cards[0].suggestions[0].actions[0].resourceId: a create action takes the whole resource",
    ),
    (
        "update without resource id",
        _del(lambda r: _action(r, 1)["resource"], "id"),
        "$.cards[0].suggestions[0].actions[1].resource.id: an update needs the resource id",
    ),
    (
        "update resource as string",
        _set(lambda r: _action(r, 1), "resource", "MedicationRequest/m1"),
        "$.cards[0].suggestions[0].actions[1].resource: a update action needs a resource object",
    ),
    (
        "delete without resourceId",
        _del(lambda r: _action(r, 2), "resourceId"),
        "$.cards[0].suggestions[0].actions[2].resourceId: a delete action needs a relative reference",
    ),
    (
        "delete with a bare id",
        _set(lambda r: _action(r, 2), "resourceId", "m2"),
        "$.cards[0].suggestions[0].actions[2].resourceId: a delete action needs a relative reference",
    ),
    (
        "delete with resource",
        _set(lambda r: _action(r, 2), "resource", {"resourceType": "X", "id": "1"}),
        "$.cards[0].suggestions[0].actions[2].resource: a delete action takes resourceId",
    ),
    # override reasons
    (
        "override reason without display",
        _del(lambda r: _card(r)["overrideReasons"][0], "display"),
        "$.cards[0].overrideReasons[0].display: missing",
    ),
    (
        "override reason without system",
        _del(lambda r: _card(r)["overrideReasons"][0], "system"),
        "$.cards[0].overrideReasons[0].system: missing",
    ),
    (
        "override reason without code",
        _del(lambda r: _card(r)["overrideReasons"][0], "code"),
        "$.cards[0].overrideReasons[0].code: missing",
    ),
    (
        "override reason as string",
        _set(_card, "overrideReasons", ["Not relevant"]),
        "$.cards[0].overrideReasons[0]: must be a JSON object",
    ),
    # links
    ("link without label", _del(_link, "label"), "$.cards[0].links[0].label: missing"),
    ("link without url", _del(_link, "url"), "$.cards[0].links[0].url: missing"),
    (
        "link url relative",
        _set(_link, "url", "launch.html"),
        "$.cards[0].links[0].url: must be an absolute http(s) URL",
    ),
    ("link without type", _del(_link, "type"), "$.cards[0].links[0].type: missing"),
    ("link type invalid", _set(_link, "type", "relative"), "$.cards[0].links[0].type: must be one of"),
    (
        "appContext on absolute link",
        _set(lambda r: _link(r, 1), "appContext", "x"),
        "$.cards[0].links[1].appContext: only allowed on links of type 'smart'",
    ),
    (
        "autolaunchable not boolean",
        _set(lambda r: _link(r, 1), "autolaunchable", "no"),
        "$.cards[0].links[1].autolaunchable: must be a boolean",
    ),
    # no null / "" / [] / {} anywhere, with the JSON path
    ("null field", _set(_card, "detail", None), "$.cards[0].detail: null"),
    (
        "null deep in a resource",
        _set(lambda r: _action(r)["resource"], "note", None),
        "$.cards[0].suggestions[0].actions[0].resource.note: null",
    ),
    ("empty links", _set(_card, "links", []), "$.cards[0].links: empty array"),
    ("empty suggestions", _set(_card, "suggestions", []), "$.cards[0].suggestions: empty array"),
    (
        "empty object in source topic",
        _set(lambda r: _card(r)["source"], "topic", {}),
        "$.cards[0].source.topic: empty object",
    ),
    (
        "empty string in a FHIR extension",
        _set(lambda r: _action(r)["resource"]["extension"][0], "valueString", ""),
        "$.cards[0].suggestions[0].actions[0].resource.extension[0].valueString: empty string",
    ),
    (
        "empty array in a resource",
        _set(lambda r: _action(r)["resource"], "note", []),
        "$.cards[0].suggestions[0].actions[0].resource.note: empty array",
    ),
    (
        "NaN",
        _set(lambda r: _action(r)["resource"], "quantity", float("nan")),
        "$.cards[0].suggestions[0].actions[0].resource.quantity: non-finite number",
    ),
    # card extension
    ("extension not an object", _set(_card, "extension", ["x"]), "$.cards[0].extension: must be a JSON object"),
    ("extension empty", _set(_card, "extension", {}), "$.cards[0].extension: empty object"),
    (
        "non-JSON inside extension",
        _set(lambda r: _card(r)["extension"]["org.example"], "t0", float("nan")),
        "$.cards[0].extension.org.example.t0: non-finite number",
    ),
]


@pytest.mark.parametrize("mutate,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_is_caught(mutate, expected):
    response = valid_response()
    mutate(response)
    found = card_violations(response)
    assert any(v.startswith(expected) for v in found), found


# An explicit null is the one thing the models read as "omitted" (and then never emit).
_MODEL_CASES = [c for c in CASES if c[0] != "null field"]


@pytest.mark.parametrize("mutate", [c[1] for c in _MODEL_CASES], ids=[c[0] for c in _MODEL_CASES])
def test_the_models_reject_the_same_mutations(mutate):
    response = valid_response()
    mutate(response)
    with pytest.raises(ValidationError):
        CardsResponse.model_validate(response)


def test_models_read_null_as_omitted_and_never_emit_it():
    response = valid_response()
    _card(response)["detail"] = None
    assert card_violations(response) == ["$.cards[0].detail: null (omit the field instead)"]
    emitted = dump(CardsResponse.model_validate(response))
    assert "detail" not in emitted["cards"][0]
    assert card_violations(emitted) == []


def test_not_an_object():
    assert card_violations([]) == ["$: the response must be a JSON object"]
    assert card_violations(None) == ["$: the response must be a JSON object"]


def test_several_violations_reported_together():
    response = valid_response()
    _card(response)["summary"] = "x" * 200
    _card(response)["indicator"] = "red"
    del _card(response)["links"][1]["type"]
    assert len(card_violations(response)) == 3


def test_extension_contents_may_hold_empty_placeholders():
    response = valid_response()
    _card(response)["extension"]["org.example"]["nrm"] = {}
    _card(response)["extension"]["org.example"]["components"] = []
    assert card_violations(response) == []


def test_input_not_modified():
    response = valid_response()
    _card(response)["summary"] = ""
    before = copy.deepcopy(response)
    card_violations(response)
    assert response == before


# ------------------------------------------------------------- models and validator agree
# Random edits of a valid response: whenever the strict models accept the result, the
# validator must too, and vice versa. This keeps the two independent implementations honest.
_PATHS = [
    (),
    ("cards", 0),
    ("cards", 0, "source"),
    ("cards", 0, "source", "topic"),
    ("cards", 0, "suggestions", 0),
    ("cards", 0, "suggestions", 1),
    ("cards", 0, "suggestions", 0, "actions", 0),
    ("cards", 0, "suggestions", 0, "actions", 2),
    ("cards", 0, "links", 0),
    ("cards", 0, "links", 1),
    ("cards", 0, "overrideReasons", 0),
    ("cards", 1),
    ("cards", 0, "suggestions", 0, "actions", 0, "resource"),
    ("cards", 0, "suggestions", 0, "actions", 1, "resource"),
    ("cards", 0, "extension"),
    ("cards", 0, "extension", "org.example"),
]
_KEYS = [
    "summary",
    "detail",
    "indicator",
    "uuid",
    "label",
    "url",
    "icon",
    "type",
    "description",
    "resource",
    "resourceId",
    "appContext",
    "selectionBehavior",
    "suggestions",
    "links",
    "overrideReasons",
    "display",
    "system",
    "code",
    "isRecommended",
    "source",
    "actions",
    "extension",
    "autolaunchable",
    "id",
    "resourceType",
    "cards",
    "systemActions",
]
_VALUES = st.sampled_from(
    [
        None,
        "",
        " ",
        "x",
        "x" * 140,
        "info",
        "critical",
        "any",
        "at-most-one",
        "smart",
        "absolute",
        "create",
        "update",
        "delete",
        "https://example.org/a",
        "X/1",
        U1,
        U2,
        U3,
        True,
        False,
        0,
        [],
        {},
        ["x"],
        {"label": "x"},
        {"resourceType": "X", "id": "1"},
        {"a": 1},
    ]
)
_EDITS = st.lists(
    st.tuples(st.sampled_from(_PATHS), st.sampled_from(_KEYS), st.one_of(_VALUES, st.none()), st.booleans()),
    min_size=1,
    max_size=3,
)


def _apply(response: dict, edits) -> None:
    for path, key, value, delete in edits:
        target = response
        try:
            for step in path:
                target = target[step]
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(target, dict):
            continue
        if delete:
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_EDITS)
def test_models_and_validator_agree(edits):
    response = valid_response()
    _apply(response, edits)
    violations = card_violations(response)
    try:
        model = CardsResponse.model_validate(response)
    except ValidationError as err:
        assert violations, f"validator passed what the models reject: {err}"
        return
    # The models may accept an input null (read as omitted); nothing else may differ.
    assert all(": null" in v for v in violations), violations
    assert card_violations(dump(model)) == []
