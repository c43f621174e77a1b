"""cds_hooks.models and cds_hooks.outcome: lenient request reading, strict response building."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from cds_hooks.models import (
    Action,
    Card,
    CardsResponse,
    Coding,
    DiscoveryResponse,
    FeedbackRequest,
    HookRequest,
    Link,
    OverrideReason,
    ServiceDescriptor,
    Source,
    Suggestion,
    dump,
    dump_json,
    order_context,
    selected_orders,
)
from cds_hooks.outcome import CDSHookError, Issue, operation_outcome
from cds_hooks.validate import card_violations

TOKEN = "eyJhbGciOiJSUzM4NCJ9.sekrit-access-token.sig"
U1 = "8f7c2b4e-1d3a-4f5b-9c6d-7e8f9a0b1c2d"
U2 = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
U3 = "11111111-2222-4333-8444-555555555555"


def medication_request(rid: str, patient: str = "pat-1", **extra) -> dict:
    res = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "draft",
        "subject": {"reference": f"Patient/{patient}"},
    }
    res.update(extra)
    return res


def sandbox_order_select() -> dict:
    """Shaped like the official sandbox's order-select call: Bundle without `type`, no
    `intent`, `category` as one object, unknown keys and extensions at several levels."""
    return {
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": "https://launch.smarthealthit.org/v/r4/fhir",
        "hook": "order-select",
        "fhirAuthorization": {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read user/*.read",
            "subject": "cds-service",
            "refresh_token": "another-secret-value",
        },
        "context": {
            "userId": "Practitioner/COREPRACTITIONER1",
            "patientId": "pat-1",
            "encounterId": "enc-9",
            "selections": ["MedicationRequest/ld-1"],
            "draftOrders": {
                "resourceType": "Bundle",
                "entry": [
                    {
                        "resource": medication_request(
                            "ld-1",
                            category={
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                        "code": "inpatient",
                                    }
                                ]
                            },
                        )
                    },
                    {"resource": medication_request("other-2", intent="order")},
                    {"fullUrl": "urn:uuid:no-resource-here"},
                ],
            },
            "com.example.contextExtra": True,
        },
        "prefetch": {"patient": {"resourceType": "Patient", "id": "pat-1"}, "labs": None},
        "extension": {"com.cds-hooks.sandbox.myextension-practitionerspecialty": "hematology"},
        "com.example.unknownTopLevel": {"kept": 1},
    }


def minimal_card(**overrides) -> dict:
    card = {"summary": "Something to know", "indicator": "info", "source": {"label": "Example"}}
    card.update(overrides)
    return card


# ============================================================================ request side
class TestHookRequest:
    def test_sandbox_shaped_request_is_accepted_and_unknown_keys_kept(self):
        req = HookRequest.model_validate(sandbox_order_select())
        assert req.hook == "order-select"
        assert req.fhirServer == "https://launch.smarthealthit.org/v/r4/fhir"
        extras = req.model_extra
        assert extras["extension"] == {"com.cds-hooks.sandbox.myextension-practitionerspecialty": "hematology"}
        assert extras["com.example.unknownTopLevel"] == {"kept": 1}
        assert req.context["com.example.contextExtra"] is True
        assert req.prefetch["labs"] is None  # null prefetch key = "looked, found nothing": must survive

    def test_from_json_bytes(self):
        req = HookRequest.model_validate_json(json.dumps(sandbox_order_select()))
        assert req.fhirAuthorization.access_token.get_secret_value() == TOKEN

    @pytest.mark.parametrize("missing", ["hook", "hookInstance", "context"])
    def test_required_top_level_fields(self, missing):
        body = sandbox_order_select()
        del body[missing]
        with pytest.raises(ValidationError) as err:
            HookRequest.model_validate(body)
        assert err.value.errors()[0]["loc"] == (missing,)

    @pytest.mark.parametrize(
        "field,value", [("hook", ""), ("hookInstance", "abc\ninjected log line"), ("context", ["not", "an", "object"])]
    )
    def test_bad_top_level_values(self, field, value):
        body = sandbox_order_select()
        body[field] = value
        with pytest.raises(ValidationError):
            HookRequest.model_validate(body)

    def test_optional_fields_may_be_absent_or_null(self):
        req = HookRequest.model_validate(
            {
                "hook": "order-sign",
                "hookInstance": "x",
                "context": {},
                "fhirServer": None,
                "fhirAuthorization": None,
                "prefetch": None,
            }
        )
        assert req.fhirAuthorization is None and req.prefetch is None and req.fhirServer is None

    def test_token_never_shown(self):
        req = HookRequest.model_validate(sandbox_order_select())
        for text in (
            repr(req),
            str(req),
            req.model_dump_json(),
            repr(req.fhirAuthorization),
            str(req.fhirAuthorization),
            json.dumps(req.model_dump(mode="json")),
        ):
            assert TOKEN not in text
            assert "sekrit" not in text
            assert "another-secret-value" not in text  # unknown auth keys may be credentials: dropped

    def test_request_repr_has_no_patient_data(self):
        req = HookRequest.model_validate(sandbox_order_select())
        text = repr(req)
        assert "pat-1" not in text and "ld-1" not in text
        assert "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea" in text  # hookInstance is there to correlate logs

    def test_fhir_authorization_fields(self):
        auth = HookRequest.model_validate(sandbox_order_select()).fhirAuthorization
        assert (auth.token_type, auth.expires_in, auth.subject, auth.patient) == ("Bearer", 300, "cds-service", None)
        assert auth.scope == "patient/*.read user/*.read"

    def test_fhir_authorization_without_token_is_rejected(self):
        body = sandbox_order_select()
        del body["fhirAuthorization"]["access_token"]
        with pytest.raises(ValidationError):
            HookRequest.model_validate(body)


# =========================================================================== order context
def request_with(context: dict, hook: str = "order-select") -> HookRequest:
    return HookRequest.model_validate({"hook": hook, "hookInstance": "hi-1", "context": context})


class TestOrderContext:
    def test_sandbox_order_select(self):
        ctx = order_context(HookRequest.model_validate(sandbox_order_select()))
        assert ctx.hook == "order-select"
        assert (ctx.patient_id, ctx.user_id, ctx.encounter_id) == ("pat-1", "Practitioner/COREPRACTITIONER1", "enc-9")
        assert ctx.selections == ["MedicationRequest/ld-1"]
        # the entry without a resource is skipped, the others kept as the plain dicts sent
        assert [o["id"] for o in ctx.draft_orders] == ["ld-1", "other-2"]
        assert ctx.draft_orders[0]["category"] == {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category", "code": "inpatient"}
            ]
        }
        assert "intent" not in ctx.draft_orders[0]
        assert [o["id"] for o in selected_orders(ctx)] == ["ld-1"]

    def test_bundle_with_type_and_bundle_without_resource_type(self):
        for bundle in (
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": medication_request("a")}]},
            {"entry": [{"resource": medication_request("a")}]},
        ):
            ctx = order_context(
                request_with({"patientId": "pat-1", "draftOrders": bundle, "selections": ["MedicationRequest/a"]})
            )
            assert [o["id"] for o in selected_orders(ctx)] == ["a"]

    def test_draft_orders_as_plain_list_of_resources_or_entries(self):
        orders = [medication_request("a"), {"resource": medication_request("b")}, "junk", {"fullUrl": "x"}]
        ctx = order_context(request_with({"patientId": "pat-1", "draftOrders": orders}, hook="order-sign"))
        assert [o["id"] for o in ctx.draft_orders] == ["a", "b"]

    def test_single_resource_as_draft_orders(self):
        ctx = order_context(request_with({"patientId": "pat-1", "draftOrders": medication_request("a")}, "order-sign"))
        assert [o["id"] for o in selected_orders(ctx)] == ["a"]

    def test_empty_bundle(self):
        ctx = order_context(
            request_with({"patientId": "pat-1", "draftOrders": {"resourceType": "Bundle"}}, "order-sign")
        )
        assert ctx.draft_orders == [] and selected_orders(ctx) == []

    def test_dstu2_medication_order_is_just_a_dict(self):
        dstu2 = {
            "resourceType": "MedicationOrder",
            "id": "mo-1",
            "status": "draft",
            "patient": {"reference": "Patient/pat-1"},
            "medicationCodeableConcept": {"text": "whatever"},
        }
        ctx = order_context(
            request_with(
                {
                    "patientId": "pat-1",
                    "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": dstu2}]},
                    "selections": ["MedicationOrder/mo-1"],
                }
            )
        )
        assert selected_orders(ctx) == [dstu2]

    def test_missing_selections_means_none_selected(self):
        ctx = order_context(request_with({"patientId": "pat-1", "draftOrders": [medication_request("a")]}))
        assert ctx.selections == []
        assert ctx.draft_orders and selected_orders(ctx) == []

    def test_null_selections_means_none_selected(self):
        ctx = order_context(
            request_with({"patientId": "pat-1", "draftOrders": [medication_request("a")], "selections": None})
        )
        assert selected_orders(ctx) == []

    def test_selection_forms(self):
        orders = {
            "resourceType": "Bundle",
            "entry": [
                {"fullUrl": "urn:uuid:5b1f8a2c-0000-4000-8000-000000000001", "resource": medication_request("a")},
                {"fullUrl": "https://ehr.example/fhir/MedicationRequest/b", "resource": medication_request("b")},
                {"resource": medication_request("c")},
                {"resource": {"resourceType": "ServiceRequest", "id": "a"}},
                {
                    "fullUrl": "urn:uuid:5b1f8a2c-0000-4000-8000-000000000009",
                    "resource": {"resourceType": "MedicationRequest"},
                },
            ],
        }

        def pick(*selections):
            ctx = order_context(
                request_with({"patientId": "pat-1", "draftOrders": orders, "selections": list(selections)})
            )
            return [(o["resourceType"], o.get("id")) for o in selected_orders(ctx)]

        assert pick("MedicationRequest/a") == [("MedicationRequest", "a")]  # typed: ServiceRequest/a not taken
        assert pick("urn:uuid:5b1f8a2c-0000-4000-8000-000000000001") == [("MedicationRequest", "a")]
        assert pick("urn:uuid:5b1f8a2c-0000-4000-8000-000000000009") == [("MedicationRequest", None)]
        assert pick("MedicationRequest/b") == [("MedicationRequest", "b")]  # via id, and via fullUrl tail
        assert pick("https://other.example/fhir/MedicationRequest/c/_history/3") == [("MedicationRequest", "c")]
        assert pick("c") == [("MedicationRequest", "c")]  # bare id
        assert pick("a") == [("MedicationRequest", "a"), ("ServiceRequest", "a")]  # a bare id matches any type
        assert pick("MedicationRequest/zzz") == []
        assert pick(" MedicationRequest/c ", "MedicationRequest/a") == [
            ("MedicationRequest", "a"),
            ("MedicationRequest", "c"),
        ]

    def test_single_string_selection_tolerated(self):
        ctx = order_context(
            request_with(
                {"patientId": "pat-1", "draftOrders": [medication_request("a")], "selections": "MedicationRequest/a"}
            )
        )
        assert [o["id"] for o in selected_orders(ctx)] == ["a"]

    def test_order_sign_returns_all_orders_and_ignores_selections(self):
        ctx = order_context(
            request_with(
                {
                    "patientId": "pat-1",
                    "selections": ["MedicationRequest/a"],
                    "draftOrders": [medication_request("a"), medication_request("b")],
                },
                "order-sign",
            )
        )
        assert ctx.selections == []
        assert [o["id"] for o in selected_orders(ctx)] == ["a", "b"]

    @pytest.mark.parametrize("hook", ["order-select", "order-sign"])
    def test_missing_patient_and_orders_named_in_one_error(self, hook):
        with pytest.raises(CDSHookError) as err:
            order_context(request_with({"userId": "Practitioner/1"}, hook))
        e = err.value
        assert e.status == 400 and e.code == "required"
        body = e.outcome()
        assert body["resourceType"] == "OperationOutcome"
        assert [i["expression"] for i in body["issue"]] == [["context.patientId"], ["context.draftOrders"]]
        assert hook in body["issue"][0]["diagnostics"]

    @pytest.mark.parametrize("patient", [None, "", "   ", 42])
    def test_bad_patient_id(self, patient):
        with pytest.raises(CDSHookError) as err:
            order_context(request_with({"patientId": patient, "draftOrders": []}))
        assert [i["expression"] for i in err.value.outcome()["issue"]] == [["context.patientId"]]

    @pytest.mark.parametrize("draft", ["MedicationRequest/a", 7, {"resourceType": "Bundle", "entry": "x"}])
    def test_malformed_draft_orders(self, draft):
        with pytest.raises(CDSHookError) as err:
            order_context(request_with({"patientId": "pat-1", "draftOrders": draft}))
        assert err.value.status == 400 and err.value.code == "invalid"

    def test_malformed_selections(self):
        with pytest.raises(CDSHookError) as err:
            order_context(request_with({"patientId": "p", "draftOrders": [], "selections": {"a": 1}}))
        assert err.value.outcome()["issue"][0]["expression"] == ["context.selections"]

    def test_other_hooks_have_no_order_context(self):
        with pytest.raises(CDSHookError) as err:
            order_context(request_with({"patientId": "p"}, hook="patient-view"))
        assert err.value.code == "not-supported"

    def test_input_dicts_are_not_copied_or_altered(self):
        body = sandbox_order_select()
        before = copy.deepcopy(body)
        order_context(HookRequest.model_validate(body))
        assert body == before


# ========================================================================== response side
class TestStrictOutput:
    def test_minimal_card_round_trip(self):
        resp = CardsResponse(cards=[Card(**minimal_card())])
        assert dump(resp) == {"cards": [minimal_card()]}
        assert json.loads(dump_json(resp)) == dump(resp)

    def test_empty_cards_allowed(self):
        assert dump(CardsResponse(cards=[])) == {"cards": []}
        assert dump_json(CardsResponse(cards=[])) == b'{"cards":[]}'

    def test_full_card_is_valid_and_has_no_nulls(self):
        card = Card(
            uuid=U1,
            summary="x" * 139,
            detail="| a | b |\n|---|---|\n| 1 | 2 |",
            indicator="warning",
            source=Source(
                label="Paper",
                url="https://doi.org/10.1182/blood.2020010543",
                topic=Coding(system="http://example.org/topics", code="t"),
            ),
            suggestions=[
                Suggestion(
                    label="Order it",
                    uuid=U2,
                    isRecommended=True,
                    actions=[
                        Action(
                            type="create",
                            description="Create an order",
                            resource={"resourceType": "ServiceRequest", "status": "draft", "intent": "proposal"},
                        ),
                        Action(type="delete", description="Remove", resourceId="MedicationRequest/ld-1"),
                        Action(
                            type="update",
                            description="Update",
                            resource={"resourceType": "MedicationRequest", "id": "m1"},
                        ),
                    ],
                )
            ],
            selectionBehavior="at-most-one",
            overrideReasons=[OverrideReason(system="http://example.org/override", code="c", display="Not relevant")],
            links=[
                Link(label="App", url="https://app.example/launch", type="smart", appContext="abc"),
                Link(label="Doc", url="https://example.org/doc", type="absolute"),
            ],
            extension={"org.example": {"n": 1, "placeholder": {}, "list": [1.5, True, "s"]}},
        )
        body = dump(CardsResponse(cards=[card]))
        assert "null" not in json.dumps(body)
        assert "appContext" not in body["cards"][0]["links"][1]
        assert card_violations(body) == []
        assert body["cards"][0]["extension"]["org.example"]["placeholder"] == {}

    @pytest.mark.parametrize("summary", ["", "   ", "x" * 140])
    def test_summary_rules(self, summary):
        with pytest.raises(ValidationError):
            Card(**minimal_card(summary=summary))

    def test_summary_limit_counts_characters_not_bytes(self):
        Card(**minimal_card(summary="é" * 139))

    @pytest.mark.parametrize(
        "bad",
        [
            {"indicator": "hint"},
            {"indicator": None},
            {"source": {}},
            {"source": {"label": ""}},
            {"source": {"label": "x", "url": "doi.org/10.1"}},
            {"source": {"label": "x", "icon": "ftp://example.org/i.png"}},
            {"source": {"label": "x", "topic": {"code": "c"}}},
            {"detail": ""},
            {"uuid": "not-a-uuid"},
            {"links": []},
            {"overrideReasons": []},
            {"suggestions": []},
            {"extension": {}},
            {"extension": {"a": {1: "non-string key"}}},
            {"extension": {"a": float("nan")}},
            {"unknownField": 1},
            {"systemActions": []},
        ],
    )
    def test_card_violations_raise(self, bad):
        with pytest.raises(ValidationError):
            Card(**minimal_card(**bad))

    def test_decimal_in_extension_rejected(self):
        # pydantic would serialise Decimal as a JSON string: a number field silently turning into text
        from decimal import Decimal

        with pytest.raises(ValidationError, match="Decimal"):
            Card(**minimal_card(extension={"a": {"value": Decimal("1.5")}}))

    def test_null_inside_extension_survives_dump(self):
        # exclude_none drops None model fields only; an extension's own nulls must reach the wire
        card = Card(**minimal_card(extension={"org.example": {"unknown": None, "list": [None, 1]}}))
        expected = {"org.example": {"unknown": None, "list": [None, 1]}}
        assert dump(card)["extension"] == expected
        assert json.loads(dump_json(card))["extension"] == expected

    def test_suggestions_need_selection_behavior(self):
        with pytest.raises(ValidationError, match="selectionBehavior is required"):
            Card(**minimal_card(suggestions=[{"label": "s"}]))
        with pytest.raises(ValidationError):
            Card(**minimal_card(suggestions=[{"label": "s"}], selectionBehavior="all"))
        with pytest.raises(ValidationError, match="without suggestions"):
            Card(**minimal_card(selectionBehavior="any"))
        Card(**minimal_card(suggestions=[{"label": "s"}], selectionBehavior="any"))

    def test_at_most_one_recommended(self):
        two = [{"label": "a", "isRecommended": True}, {"label": "b", "isRecommended": True}]
        with pytest.raises(ValidationError, match="at most one"):
            Card(**minimal_card(suggestions=two, selectionBehavior="at-most-one"))
        Card(**minimal_card(suggestions=two, selectionBehavior="any"))

    def test_duplicate_suggestion_uuids_in_card(self):
        with pytest.raises(ValidationError, match="unique"):
            Card(
                **minimal_card(
                    suggestions=[{"label": "a", "uuid": U1}, {"label": "b", "uuid": U1}], selectionBehavior="any"
                )
            )

    def test_duplicate_uuids_across_cards(self):
        with pytest.raises(ValidationError, match="more than once"):
            CardsResponse(
                cards=[
                    minimal_card(uuid=U1),
                    minimal_card(uuid=U2, suggestions=[{"label": "s", "uuid": U1}], selectionBehavior="any"),
                ]
            )
        CardsResponse(cards=[minimal_card(uuid=U1), minimal_card(uuid=U2)])

    def test_override_reason_needs_display_but_topic_does_not(self):
        with pytest.raises(ValidationError):
            OverrideReason(system="s", code="c")
        with pytest.raises(ValidationError):
            OverrideReason(system="s", code="c", display="")
        Coding(system="s", code="c")

    def test_link_rules(self):
        with pytest.raises(ValidationError, match="appContext"):
            Link(label="l", url="https://x.example", type="absolute", appContext="ctx")
        with pytest.raises(ValidationError):
            Link(label="l", url="https://x.example", type="relative")
        with pytest.raises(ValidationError):
            Link(label="l", url="/relative/path", type="absolute")
        with pytest.raises(ValidationError):
            Link(label="", url="https://x.example", type="absolute")

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"type": "create", "description": "d"},
            {"type": "create", "description": "d", "resource": {"status": "draft"}},
            {"type": "create", "description": "d", "resource": {"resourceType": "X", "note": []}},
            {"type": "create", "description": "d", "resource": {"resourceType": "X", "status": None}},
            {"type": "create", "description": "d", "resource": {"resourceType": "X"}, "resourceId": "X/1"},
            {"type": "update", "description": "d", "resource": {"resourceType": "X"}},
            {"type": "delete", "description": "d"},
            {"type": "delete", "description": "d", "resourceId": "just-an-id"},
            {"type": "delete", "description": "d", "resourceId": "X/1", "resource": {"resourceType": "X", "id": "1"}},
            {"type": "delete", "resourceId": "X/1"},
            {"type": "delete", "description": "", "resourceId": "X/1"},
            {"type": "patch", "description": "d", "resourceId": "X/1"},
        ],
    )
    def test_action_rules(self, kwargs):
        with pytest.raises(ValidationError):
            Action(**kwargs)

    def test_strict_types_no_coercion(self):
        with pytest.raises(ValidationError):
            Suggestion(label="s", isRecommended="true")
        with pytest.raises(ValidationError):
            Card(**minimal_card(summary=123))

    def test_models_are_frozen(self):
        card = Card(**minimal_card())
        with pytest.raises(ValidationError):
            card.summary = ""

    def test_service_descriptor(self):
        d = ServiceDescriptor(
            hook="order-sign",
            id="svc-1",
            description="Does things",
            prefetch={"patient": "Patient/{{context.patientId}}"},
        )
        assert dump(d) == {
            "hook": "order-sign",
            "id": "svc-1",
            "description": "Does things",
            "prefetch": {"patient": "Patient/{{context.patientId}}"},
        }
        for bad in (
            {"prefetch": {}},
            {"prefetch": {"k": ""}},
            {"id": "has space"},
            {"id": "a/b"},
            {"description": ""},
            {"title": ""},
            {"usageRequirements": ""},
        ):
            with pytest.raises(ValidationError):
                ServiceDescriptor(**{"hook": "order-sign", "id": "svc-1", "description": "x", **bad})

    def test_discovery_response(self):
        assert dump(DiscoveryResponse(services=[])) == {"services": []}
        svc = {"hook": "order-sign", "id": "a", "description": "x"}
        with pytest.raises(ValidationError, match="unique"):
            DiscoveryResponse(services=[svc, svc])


# ================================================================================ feedback
class TestFeedback:
    def test_spec_examples(self):
        accepted = FeedbackRequest.model_validate(
            {
                "feedback": [
                    {
                        "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
                        "outcome": "accepted",
                        "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
                        "outcomeTimestamp": "2021-12-11T10:05:31Z",
                    }
                ]
            }
        )
        assert accepted.feedback[0].outcomeTimestamp == datetime(2021, 12, 11, 10, 5, 31, tzinfo=UTC)
        overridden = FeedbackRequest.model_validate(
            {
                "feedback": [
                    {
                        "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
                        "outcome": "overridden",
                        "overrideReason": {
                            "reason": {
                                "code": "d7ecf885",
                                "system": "https://example.com/cds-hooks/override-reason-system",
                            },
                            "userComment": "A comment entered by the clinician.",
                        },
                        "outcomeTimestamp": "2020-12-11T00:00:00Z",
                    }
                ]
            }
        )
        assert overridden.feedback[0].overrideReason.reason.code == "d7ecf885"
        bare = FeedbackRequest.model_validate(
            {
                "feedback": [
                    {
                        "card": "f6b95768-b1c8-40dc-8385-bf3504b82ffb",
                        "outcome": "overridden",
                        "outcomeTimestamp": "2020-12-11T00:00:00Z",
                    }
                ]
            }
        )
        assert bare.feedback[0].overrideReason is None

    def test_naive_timestamp_is_utc_and_offsets_are_normalised(self):
        fb = FeedbackRequest.model_validate(
            {
                "feedback": [
                    {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2020-12-11T00:00:00"},
                    {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2020-12-11T02:00:00+02:00"},
                ]
            }
        )
        assert [f.outcomeTimestamp for f in fb.feedback] == [datetime(2020, 12, 11, tzinfo=UTC)] * 2

    @pytest.mark.parametrize(
        "item",
        [
            {"card": "c", "outcome": "declined", "outcomeTimestamp": "2020-12-11T00:00:00Z"},  # fb-1
            {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2020-12-11T00:00:00Z"},  # fb-2
            {"card": "c", "outcome": "accepted", "acceptedSuggestions": [], "outcomeTimestamp": "2020-12-11T00:00:00Z"},
            {
                "card": "c",
                "outcome": "overridden",
                "overrideReason": {},
                "outcomeTimestamp": "2020-12-11T00:00:00Z",
            },  # fb-3
            {
                "card": "c",
                "outcome": "overridden",
                "overrideReason": {"userComment": "  "},
                "outcomeTimestamp": "2020-12-11T00:00:00Z",
            },
            {
                "card": "c",
                "outcome": "overridden",
                "acceptedSuggestions": [{"id": "s"}],
                "outcomeTimestamp": "2020-12-11T00:00:00Z",
            },
            {
                "card": "c",
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "s"}],
                "overrideReason": {"userComment": "no"},
                "outcomeTimestamp": "2020-12-11T00:00:00Z",
            },
            {"card": "c", "outcome": "overridden"},
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"},
            {"card": "", "outcome": "overridden", "outcomeTimestamp": "2020-12-11T00:00:00Z"},
            {"outcome": "overridden", "outcomeTimestamp": "2020-12-11T00:00:00Z"},
        ],
    )
    def test_invalid_feedback(self, item):
        with pytest.raises(ValidationError):
            FeedbackRequest.model_validate({"feedback": [item]})

    def test_empty_feedback_list_rejected(self):
        with pytest.raises(ValidationError):
            FeedbackRequest.model_validate({"feedback": []})

    def test_user_comment_not_in_repr(self):
        fb = FeedbackRequest.model_validate(
            {
                "feedback": [
                    {
                        "card": "c",
                        "outcome": "overridden",
                        "outcomeTimestamp": "2020-12-11T00:00:00Z",
                        "overrideReason": {"userComment": "patient Jane Doe refused"},
                    }
                ]
            }
        )
        assert "Jane" not in repr(fb)
        assert fb.feedback[0].overrideReason.userComment == "patient Jane Doe refused"

    def test_unknown_keys_tolerated(self):
        fb = FeedbackRequest.model_validate(
            {
                "feedback": [
                    {
                        "card": "c",
                        "outcome": "overridden",
                        "outcomeTimestamp": "2020-12-11T00:00:00Z",
                        "extension": {"com.example": 1},
                    }
                ],
                "extension": {"x": 1},
            }
        )
        assert fb.feedback[0].model_extra == {"extension": {"com.example": 1}}


# ================================================================================= outcome
class TestOperationOutcome:
    def test_single_issue(self):
        assert operation_outcome("context.patientId is missing", "required", expression=["context.patientId"]) == {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "required",
                    "diagnostics": "context.patientId is missing",
                    "expression": ["context.patientId"],
                }
            ],
        }

    def test_defaults_and_no_empty_expression(self):
        body = operation_outcome("boom")
        assert body["issue"] == [{"severity": "error", "code": "processing", "diagnostics": "boom"}]
        assert "expression" not in operation_outcome("boom", expression=[])["issue"][0]

    @pytest.mark.parametrize(
        "kwargs", [{"code": "no-such-code"}, {"severity": "bad"}, {"diagnostics": ""}, {"expression": [""]}]
    )
    def test_invalid_codes_rejected(self, kwargs):
        args = {"diagnostics": "x", **kwargs}
        with pytest.raises(ValueError):
            operation_outcome(**args)

    def test_error_with_several_issues(self):
        err = CDSHookError(
            412,
            "incomplete",
            "prefetch 'labs' is missing",
            more=[Issue("prefetch 'patient' failed", "incomplete", "warning")],
        )
        assert (err.status, err.code, err.diagnostics) == (412, "incomplete", "prefetch 'labs' is missing")
        assert [i["severity"] for i in err.outcome()["issue"]] == ["error", "warning"]
        assert str(err) == "prefetch 'labs' is missing"

    def test_swapped_arguments_fail_loudly(self):
        with pytest.raises(ValueError):
            CDSHookError(400, "context.patientId is missing", "required")
        with pytest.raises(ValueError):
            CDSHookError(200, "processing", "fine")
