"""cds_hooks.registry: a service is declared once and discovery is derived from it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cds_hooks.registry import DuplicateServiceError, Registry, ServiceDefinition


def handler(*args, **kwargs):
    return {"cards": []}


def definition(**overrides) -> ServiceDefinition:
    fields = {
        "id": "example-order-sign",
        "hook": "order-sign",
        "title": "Example at order signing",
        "description": "Checks the orders being signed.",
        "prefetch": {"patient": "Patient/{{context.patientId}}"},
        "handler": handler,
    }
    fields.update(overrides)
    return ServiceDefinition(**fields)


def test_discovery_from_registered_services_in_order():
    reg = Registry()
    reg.register(definition())
    reg.register(
        definition(
            id="example-order-select",
            hook="order-select",
            title="Example at selection",
            prefetch={},
            usage_requirements="Needs the patient's labs.",
        )
    )
    assert reg.discovery() == {
        "services": [
            {
                "hook": "order-sign",
                "id": "example-order-sign",
                "title": "Example at order signing",
                "description": "Checks the orders being signed.",
                "prefetch": {"patient": "Patient/{{context.patientId}}"},
            },
            {
                "hook": "order-select",
                "id": "example-order-select",
                "title": "Example at selection",
                "description": "Checks the orders being signed.",
                "usageRequirements": "Needs the patient's labs.",
            },
        ]
    }


def test_empty_registry_discovery():
    assert Registry().discovery() == {"services": []}


def test_duplicate_id_rejected_even_for_another_hook():
    reg = Registry([definition()])
    with pytest.raises(DuplicateServiceError):
        reg.register(definition(hook="order-select"))
    assert len(reg) == 1
    assert isinstance(DuplicateServiceError("x"), ValueError)


def test_get_contains_iter_len():
    first, second = definition(), definition(id="second")
    reg = Registry([first, second])
    assert reg.get("example-order-sign") is first
    assert reg.get("nope") is None
    assert "second" in reg and "nope" not in reg
    assert list(reg) == [first, second]
    assert len(reg) == 2


def test_register_returns_definition_and_checks_type():
    reg = Registry()
    d = definition()
    assert reg.register(d) is d
    with pytest.raises(TypeError):
        reg.register({"id": "x"})


def test_definition_is_immutable_including_prefetch():
    templates = {"patient": "Patient/{{context.patientId}}"}
    d = definition(prefetch=templates)
    templates["later"] = "Observation?patient={{context.patientId}}"  # caller's dict changes afterwards
    assert dict(d.prefetch) == {"patient": "Patient/{{context.patientId}}"}
    with pytest.raises(TypeError):
        d.prefetch["x"] = "y"
    with pytest.raises(AttributeError):
        d.id = "other"
    assert hash(d) == hash(d)  # usable as a dict key / in sets


def test_handler_is_carried_untouched():
    assert definition().handler is handler


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "has space"},
        {"id": ""},
        {"id": "a/b"},
        {"hook": ""},
        {"description": ""},
        {"description": "  "},
        {"title": ""},
        {"prefetch": {"patient": ""}},
        {"prefetch": {"": "Patient/1"}},
    ],
)
def test_invalid_definitions_fail_at_declaration(bad):
    with pytest.raises(ValidationError):
        definition(**bad)


def test_discovery_output_is_a_fresh_dict():
    reg = Registry([definition()])
    first = reg.discovery()
    first["services"][0]["prefetch"]["injected"] = "x"
    assert "injected" not in reg.discovery()["services"][0]["prefetch"]
