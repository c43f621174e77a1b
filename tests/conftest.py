"""Shared fixtures: the app under test (development settings) and the real FHIR server."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.fhir_server import fhir_access_token, fhir_base_url, fhir_server  # noqa: F401


def dev_settings(**overrides) -> Settings:
    base = {"service": {"development_mode": True, "timezone": "UTC"},
            "fhir": {"allowed_servers": ["http://127.0.0.1"], "deadline_seconds": 2.0}}
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value}
    return Settings(**base)


@pytest.fixture(scope="session")
def client() -> TestClient:
    with TestClient(create_app(dev_settings()), raise_server_exceptions=False) as c:
        yield c
