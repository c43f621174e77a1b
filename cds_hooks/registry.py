"""Services are declared once; discovery and routing are both derived from the declaration,
so what the EHR is told and what the app serves cannot drift apart."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .models import DiscoveryResponse, ServiceDescriptor, dump


# eq=False: identity semantics, and hashable although prefetch is a mapping.
@dataclass(frozen=True, slots=True, eq=False)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    prefetch: Mapping[str, str] = field(default_factory=dict)
    handler: Any = None  # the app decides the call signature; the protocol layer only carries it
    usage_requirements: str | None = None

    def __post_init__(self) -> None:
        # Read-only copy: a definition is shared by discovery and every request.
        object.__setattr__(self, "prefetch", MappingProxyType(dict(self.prefetch)))
        # Building the descriptor runs every discovery rule now, at declaration time.
        self.descriptor()

    def descriptor(self) -> ServiceDescriptor:
        return ServiceDescriptor(
            hook=self.hook,
            id=self.id,
            title=self.title,
            description=self.description,
            prefetch=dict(self.prefetch) or None,  # an empty object is never emitted
            usageRequirements=self.usage_requirements,
        )


class DuplicateServiceError(ValueError):
    pass


class Registry:
    def __init__(self, services: tuple[ServiceDefinition, ...] | list[ServiceDefinition] = ()) -> None:
        self._services: dict[str, ServiceDefinition] = {}
        for service in services:
            self.register(service)

    def register(self, service: ServiceDefinition) -> ServiceDefinition:
        if not isinstance(service, ServiceDefinition):
            raise TypeError("register() takes a ServiceDefinition")
        if service.id in self._services:
            raise DuplicateServiceError(f"service id {service.id!r} is already registered")
        self._services[service.id] = service
        return service

    def get(self, service_id: str) -> ServiceDefinition | None:
        return self._services.get(service_id)

    def __contains__(self, service_id: object) -> bool:
        return service_id in self._services

    def __iter__(self) -> Iterator[ServiceDefinition]:
        return iter(tuple(self._services.values()))  # registration order, safe against register() mid-loop

    def __len__(self) -> int:
        return len(self._services)

    def discovery(self) -> dict:
        """`GET /cds-services` body: {"services": [...]} in registration order."""
        return dump(DiscoveryResponse(services=[s.descriptor() for s in self._services.values()]))
