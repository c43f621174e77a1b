"""Shared fixtures: the app under test (development settings) and the real FHIR server."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
from fastapi.testclient import TestClient

from service.web.app import create_app
from service.web.settings import Settings
from tests.fhir_server import fhir_access_token, fhir_base_url, fhir_server  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401

# One SQLite feedback file per test process, outside the work tree.
_FEEDBACK_DIR = tempfile.mkdtemp(prefix="hematotox-test-feedback-")
atexit.register(shutil.rmtree, _FEEDBACK_DIR, ignore_errors=True)


def dev_settings(**overrides) -> Settings:
    """Development mode (no JWT needed), FHIR servers on 127.0.0.1 at any port, a throwaway
    feedback database. Each keyword replaces keys of one section: dev_settings(fhir={...})."""
    base = {
        "service": {"development_mode": True, "timezone": "UTC"},
        "fhir": {"allowed_servers": ["http://127.0.0.1:*"], "deadline_seconds": 2.0},
        "feedback": {"sqlite_path": os.path.join(_FEEDBACK_DIR, "feedback.sqlite3")},
    }
    for key, value in overrides.items():
        # A section (dict) is merged key by key; anything else (trusted_clients=[...]) replaces.
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return Settings(**base)


@pytest.fixture(scope="session")
def client() -> TestClient:
    with TestClient(create_app(dev_settings()), raise_server_exceptions=False) as c:
        yield c


def pytest_configure(config: pytest.Config) -> None:
    # `slow`: rehearsals that install into a fresh virtualenv (tests/test_deploy.py); they run in
    # scripts/test.sh like everything else, `-m "not slow"` skips them in a quick local loop.
    config.addinivalue_line("markers", "slow: installs into a fresh virtualenv; about a minute")
