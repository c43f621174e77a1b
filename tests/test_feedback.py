"""Feedback: the spec's shape is checked, a repeat is not a duplicate, and nothing acknowledged is
lost, with 50 concurrent writers and a crash-restart of the service, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cds_hooks.models import FeedbackItem
from service.web.app import create_app
from service.web.feedback_store import FeedbackStore, database_url, natural_key
from tests.conftest import dev_settings
from tests.jwt_keys import BASE, Ehr, bearer, write_jwks
from tests.postgres import fresh_postgres_database

REPO = Path(__file__).resolve().parent.parent
SERVICE = "hematotox-order-sign"
FEEDBACK = f"/cds-services/{SERVICE}/feedback"
CARD = "9368d37b-283f-44a0-93ea-547cebab93ed"


def overridden(card: str = CARD, ts: str = "2024-03-10T10:00:00Z", comment: str | None = None) -> dict:
    reason = {
        "reason": {
            "system": "https://hematotox-cds.example.org/override",
            "code": "not-relevant",
            "display": "Not relevant",
        }
    }
    if comment:
        reason["userComment"] = comment
    return {"card": card, "outcome": "overridden", "overrideReason": reason, "outcomeTimestamp": ts}


def accepted(card: str = CARD, ts: str = "2024-03-10T10:00:00Z", *ids: str) -> dict:
    return {
        "card": card,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": i} for i in ids or ("s1",)],
        "outcomeTimestamp": ts,
    }


def rows(store_url: str | None, sqlite_path: str) -> list[dict]:
    async def read():
        store = FeedbackStore.open(store_url, sqlite_path)
        try:
            await store.create_schema()
            return await store.rows()
        finally:
            await store.aclose()

    return asyncio.run(read())


# --------------------------------------------------------------------------- the two databases
@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path) -> Iterator[tuple[str | None, str]]:
    """(feedback.database_url, feedback.sqlite_path) for a fresh, empty store."""
    sqlite_path = str(tmp_path / "feedback.sqlite3")
    if request.param == "sqlite":
        yield None, sqlite_path
    else:
        with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
            yield url, sqlite_path


@pytest.fixture
def app_client(backend):
    url, path = backend
    with TestClient(
        create_app(dev_settings(feedback={"database_url": url, "sqlite_path": path})), raise_server_exceptions=False
    ) as c:
        yield c, backend


# --------------------------------------------------------------------------- shape and idempotency
def test_feedback_is_stored_once_however_often_it_is_sent(app_client):
    c, (url, path) = app_client
    body = {"feedback": [overridden(comment="patient declined"), accepted(CARD, "2024-03-10T10:05:00Z", "s2", "s1")]}
    for _ in range(3):
        r = c.post(FEEDBACK, json=body)
        assert r.status_code == 200 and r.content == b""
        assert r.headers["cache-control"] == "no-store"
    # The same feedback in another spelling (timestamp offset, suggestion order) is the same feedback.
    same = {"feedback": [accepted(CARD, "2024-03-10T11:05:00+01:00", "s1", "s2")]}
    assert c.post(FEEDBACK, json=same).status_code == 200
    stored = rows(url, path)
    assert len(stored) == 2
    assert {r["outcome"] for r in stored} == {"overridden", "accepted"}
    assert all(r["service_id"] == SERVICE and r["card"] == CARD for r in stored)
    assert "patient declined" in next(r["item"] for r in stored if r["outcome"] == "overridden")


def test_feedback_is_stored_as_the_client_sent_it(app_client):
    c, (url, path) = app_client
    item = {
        "card": CARD,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "s2"}, {"id": "s1"}],
        "outcomeTimestamp": "2024-03-10T10:00:57.700Z",
        "extension": {"https://ehr.example.org/ui": "sidebar"},  # a member the spec does not name
    }
    assert c.post(FEEDBACK, json={"feedback": [item]}).status_code == 200
    # The same instant in two other spellings: the same feedback, stored once, as first sent.
    for ts in ("2024-03-10T11:00:57.7+01:00", "2024-03-10T10:00:57.700000Z"):
        assert c.post(FEEDBACK, json={"feedback": [{**item, "outcomeTimestamp": ts}]}).status_code == 200
    (row,) = rows(url, path)
    assert json.loads(row["item"]) == item and list(json.loads(row["item"])) == list(item)
    assert '"outcomeTimestamp":"2024-03-10T10:00:57.700Z"' in row["item"]
    assert row["outcome_timestamp"] == "2024-03-10T10:00:57.700000+00:00"  # the instant, for ordering
    # A different instant is a different action.
    assert (
        c.post(FEEDBACK, json={"feedback": [{**item, "outcomeTimestamp": "2024-03-10T10:00:57.701Z"}]}).status_code
        == 200
    )
    assert len(rows(url, path)) == 2


def test_different_outcomes_of_one_card_are_all_kept(app_client):
    c, (url, path) = app_client
    body = {
        "feedback": [
            overridden(),
            overridden(comment="other reason"),
            overridden(ts="2024-03-11T10:00:00Z"),
            accepted(),
        ]
    }
    assert c.post(FEEDBACK, json=body).status_code == 200
    assert len(rows(url, path)) == 4


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"feedback": []},
        {"feedback": [{"card": CARD, "outcome": "maybe", "outcomeTimestamp": "2024-03-10T10:00:00Z"}]},
        {"feedback": [{"card": CARD, "outcome": "accepted", "outcomeTimestamp": "2024-03-10T10:00:00Z"}]},
        {"feedback": [{**accepted(), "overrideReason": {"userComment": "x"}}]},
        {"feedback": [{**overridden(), "acceptedSuggestions": [{"id": "s1"}]}]},
        {"feedback": [{"card": CARD, "outcome": "overridden", "overrideReason": {}, "outcomeTimestamp": "2024-03-10"}]},
        {"feedback": [{"card": CARD, "outcome": "overridden", "outcomeTimestamp": "yesterday"}]},
        {"feedback": [{"card": CARD, "outcome": "overridden", "outcomeTimestamp": "0001-01-01T00:00:00+01:00"}]},
        {"feedback": [{"card": "", "outcome": "overridden", "outcomeTimestamp": "2024-03-10T10:00:00Z"}]},
        {"feedback": "all good"},
        [overridden()],
    ],
    ids=lambda b: str(b)[:60],
)
def test_invalid_feedback_is_400_outcome_and_not_stored(tmp_path, body):
    path = str(tmp_path / "f.sqlite3")
    with TestClient(create_app(dev_settings(feedback={"sqlite_path": path})), raise_server_exceptions=False) as c:
        r = c.post(FEEDBACK, json=body)
        assert r.status_code == 400, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
        assert "x" not in r.json()["issue"][0]["diagnostics"].split(": ")[0:1]  # no input echoed
        assert c.post(FEEDBACK, content=b"{nope", headers={"Content-Type": "application/json"}).status_code == 400
    assert rows(None, path) == []


def test_feedback_for_an_unknown_service_is_404(client):
    r = client.post("/cds-services/no-such-service/feedback", json={"feedback": [overridden()]})
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"


def test_natural_key():
    a = FeedbackItem.model_validate(accepted(CARD, "2024-03-10T10:00:00Z", "s1", "s2"))
    b = FeedbackItem.model_validate(accepted(CARD, "2024-03-10T10:00:00+00:00", "s2", "s1"))
    assert natural_key(SERVICE, a) == natural_key(SERVICE, b)
    assert natural_key(SERVICE, a) != natural_key("other-service", a)
    o1 = FeedbackItem.model_validate(overridden(comment="a"))
    o2 = FeedbackItem.model_validate(overridden(comment="b"))
    assert natural_key(SERVICE, o1) != natural_key(SERVICE, o2)


def test_database_urls():
    assert database_url("postgresql://u:p@db:5432/x", "ignored").drivername == "postgresql+asyncpg"
    assert database_url("postgres://u@db/x", "ignored").drivername == "postgresql+asyncpg"
    assert database_url(None, "var/f.sqlite3").drivername == "sqlite+aiosqlite"
    with pytest.raises(ValueError):
        database_url("mysql://u@db/x", "ignored")


def test_sqlite_store_uses_wal(tmp_path):
    path = tmp_path / "f.sqlite3"

    async def mode():
        store = FeedbackStore.open(None, str(path))
        await store.create_schema()
        async with store.engine.connect() as conn:
            value = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
        await store.aclose()
        return value

    assert asyncio.run(mode()).lower() == "wal"


def test_the_sending_ehr_is_recorded(tmp_path):
    ehr = Ehr()
    path = str(tmp_path / "f.sqlite3")
    settings = dev_settings(
        service={"development_mode": False, "public_base_url": BASE},
        trusted_clients=[{"issuer": ehr.issuer, "jwks_file": str(write_jwks(tmp_path / "jwks.json", ehr))}],
        feedback={"sqlite_path": path},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.post(FEEDBACK, json={"feedback": [overridden()]}, headers=bearer(ehr.token(BASE + FEEDBACK)))
        assert r.status_code == 200
    assert [r["client"] for r in rows(None, path)] == [ehr.issuer]


def test_database_down_keeps_hooks_up_and_answers_feedback_503(tmp_path):
    settings = dev_settings(feedback={"database_url": "postgresql://u:p@127.0.0.1:1/nothing"})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.get("/cds-services").status_code == 200
        r = c.post(FEEDBACK, json={"feedback": [overridden()]})
        assert r.status_code == 503 and r.json()["issue"][0]["code"] == "transient"


# --------------------------------------------------------------------------- 50 writers + a crash
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_service(config: Path, port: int, env: dict) -> Iterator[subprocess.Popen]:
    output = config.parent / f"service-{port}-{time.monotonic_ns()}.log"
    with open(output, "wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.web.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env={**os.environ, **env, "HEMATOTOX_CONFIG": str(config)},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/cds-services", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not start: " + output.read_text()[-2000:])
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


WRITERS = 50
BATCHES = 4


def batch(writer: int, b: int) -> dict:
    # Two items of this writer's own, plus one that every writer sends (the same feedback delivered
    # by several paths): 50 x 4 x 2 + 1 distinct items in all.
    ts = f"2024-03-10T10:{b:02d}:{writer % 60:02d}Z"
    return {
        "feedback": [
            overridden(f"card-{writer}-{b}-a", ts, comment=f"comment {writer}/{b}"),
            accepted(f"card-{writer}-{b}-b", ts, f"s-{writer}"),
            overridden("card-shared", "2024-03-10T09:00:00Z"),
        ]
    }


def test_50_concurrent_writers_and_a_crash_lose_and_duplicate_nothing(backend, tmp_path):
    url, sqlite_path = backend
    config = tmp_path / "config.toml"
    config.write_text(
        f'[service]\ndevelopment_mode = true\ntimezone = "UTC"\n[feedback]\nsqlite_path = "{sqlite_path}"\n'
    )
    env = {"HEMATOTOX_FEEDBACK__DATABASE_URL": url} if url else {}
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}{FEEDBACK}"
    acknowledged: list[tuple[int, int]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def post_until_stored(http: httpx.Client, body: dict) -> None:
        deadline = time.monotonic() + 90
        while True:
            try:
                r = http.post(endpoint, json=body)
                if r.status_code == 200:
                    return
                if r.status_code < 500:
                    raise AssertionError(f"HTTP {r.status_code}: {r.text[:200]}")
            except httpx.TransportError:
                pass  # the service is down (crashed, restarting): send again, as an EHR would
            if time.monotonic() > deadline:
                raise AssertionError("feedback not stored within 90 s")
            time.sleep(0.05)

    def writer(w: int) -> None:
        try:
            with httpx.Client(timeout=10) as http:
                for b in range(BATCHES):
                    post_until_stored(http, batch(w, b))
                    with lock:
                        acknowledged.append((w, b))
                post_until_stored(http, batch(w, 0))  # and a plain repeat
        except Exception as exc:
            errors.append(f"writer {w}: {exc}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    with running_service(config, port, env) as first:
        for t in threads:
            t.start()
        while len(acknowledged) < WRITERS and any(t.is_alive() for t in threads):
            time.sleep(0.005)
        first.send_signal(signal.SIGKILL)  # a crash, in the middle of the writes
        first.wait()
    crashed_after = len(acknowledged)
    with running_service(config, port, env):
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors[:5]
        assert len(acknowledged) == WRITERS * BATCHES
        # After the restart, everything is sent once more (a client's retry of a whole day).
        with httpx.Client(timeout=10) as http:
            for w in range(0, WRITERS, 7):
                assert http.post(endpoint, json=batch(w, BATCHES - 1)).status_code == 200

    stored = rows(url, sqlite_path)
    expected_cards = {f"card-{w}-{b}-{x}" for w in range(WRITERS) for b in range(BATCHES) for x in "ab"}
    expected_cards.add("card-shared")
    cards = [r["card"] for r in stored]
    assert len(cards) == len(set(cards)) == WRITERS * BATCHES * 2 + 1, "duplicates or losses"
    assert set(cards) == expected_cards
    assert len({r["natural_key"] for r in stored}) == len(stored)
    assert 0 < crashed_after < WRITERS * BATCHES  # the crash really happened mid-way
