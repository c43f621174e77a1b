"""Durable, idempotent storage of CDS Hooks feedback (accepted / overridden cards) for audit.

One library, one code path: SQLAlchemy 2 Core on an AsyncEngine, with aiosqlite for SQLite (the
default: a file, WAL journal, synchronous=FULL) and asyncpg for PostgreSQL (when
`feedback.database_url` is set). Async rather than sync-in-a-threadpool because the service is an
asyncio app: asyncpg is natively async, and a slow database then only holds a connection from the
engine's pool, never one of the threadpool's workers that FastAPI also needs for other work.

Idempotency: each feedback item has a natural key, the SHA-256 of (service id, card, outcome,
outcomeTimestamp, sorted accepted suggestion ids, override reason code/system and userComment),
stored in a UNIQUE column and inserted with `ON CONFLICT DO NOTHING`. A client that sends the
same feedback twice (a retry, a duplicate) leaves one row; concurrent writers cannot race past it
because the database enforces the constraint. The key holds outcomeTimestamp as the instant (UTC,
microseconds), not as spelled: "…57.7Z", "…57.700Z" and "…58.7+01:00"-style spellings of one
instant are one clinician's action, and a retry through another JSON serialiser must not store it
twice; keys of rows stored before stay valid, so an upgrade adds no duplicates.

Stored as received: the `item` column is the item's JSON object as the client sent it (its values
and members, unknown ones included, in its order), not the validated model re-serialised; the
first spelling of a repeated item is the one kept.

Durability: an item is committed before the service answers 200, so an acknowledged item survives
a crash or a restart. The schema is created at start (idempotent; a race between replicas is
retried).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cds_hooks.models import FeedbackItem

log = logging.getLogger("hematotox.feedback")

metadata = MetaData()

feedback_table = Table(
    "cds_feedback",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    # Hex SHA-256 of the natural key: the idempotency guard.
    Column("natural_key", String(64), nullable=False, unique=True),
    Column("service_id", String(128), nullable=False),
    Column("card", Text, nullable=False),
    Column("outcome", String(16), nullable=False),
    # The instant, ISO 8601 UTC with microseconds (for ordering and queries), exactly as it enters the
    # natural key; the client's own spelling is in `item`.
    Column("outcome_timestamp", String(40), nullable=False),
    # The whole item as the client sent it (JSON), including a clinician's userComment: audit data,
    # never logged.
    Column("item", Text, nullable=False),
    # The JWT issuer that sent it, when the call was authenticated.
    Column("client", Text, nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
Index("ix_cds_feedback_service_card", feedback_table.c.service_id, feedback_table.c.card)


@dataclass(frozen=True)
class ReceivedItem:
    """One feedback item: validated (for the key and the columns) and as the client sent it (stored)."""

    item: FeedbackItem
    sent: dict[str, Any] = field(repr=False)  # may hold a clinician's comment (PHI): never in a repr


@dataclass(frozen=True)
class StoreResult:
    received: int
    stored: int

    @property
    def duplicates(self) -> int:
        return self.received - self.stored


def database_url(database_url: str | None, sqlite_path: str) -> URL:
    """The SQLAlchemy URL with its async driver: asyncpg for PostgreSQL, aiosqlite for SQLite."""
    if not database_url:
        path = Path(sqlite_path).expanduser().resolve()
        return URL.create("sqlite+aiosqlite", database=str(path))
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    raise ValueError(f"feedback.database_url: unsupported database {backend!r} (PostgreSQL or SQLite)")


def natural_key(service_id: str, item: FeedbackItem) -> str:
    accepted = sorted(s.id for s in item.acceptedSuggestions or ())
    reason = item.overrideReason
    coding = reason.reason if reason is not None else None
    parts = [
        service_id,
        item.card,
        item.outcome,
        _timestamp(item.outcomeTimestamp),
        accepted,
        [coding.system, coding.code] if coding is not None else None,
        reason.userComment if reason is not None else None,
    ]
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class FeedbackStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()

    @classmethod
    def open(cls, database_url_or_none: str | None, sqlite_path: str = "var/feedback.sqlite3") -> FeedbackStore:
        url = database_url(database_url_or_none, sqlite_path)
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            # sqlite3's own busy timeout: concurrent writers wait for the lock instead of failing.
            engine = create_async_engine(url, connect_args={"timeout": 30})
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        return cls(engine)

    @property
    def description(self) -> str:
        """For logs: the backend and where, never a password."""
        url = self.engine.url
        where = url.database if url.get_backend_name() == "sqlite" else f"{url.host}:{url.port}/{url.database}"
        return f"{url.get_backend_name()}:{where}"

    async def create_schema(self) -> None:
        async with self._schema_lock:
            if self._schema_ready:
                return
            for attempt in range(3):
                try:
                    async with self.engine.begin() as conn:
                        await conn.run_sync(metadata.create_all, checkfirst=True)
                    break
                except DBAPIError:
                    # Another replica created the table between our check and our CREATE: look again.
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
            self._schema_ready = True

    async def add(self, service_id: str, items: list[ReceivedItem], client: str | None = None) -> StoreResult:
        """Store every item not stored before, in one transaction; committed when this returns."""
        if not self._schema_ready:
            await self.create_schema()
        now = datetime.now(UTC)
        rows: dict[str, dict] = {}
        for received in items:
            item = received.item
            key = natural_key(service_id, item)
            rows.setdefault(
                key,
                {
                    "natural_key": key,
                    "service_id": service_id,
                    "card": item.card,
                    "outcome": item.outcome,
                    "outcome_timestamp": _timestamp(item.outcomeTimestamp),
                    "item": orjson.dumps(received.sent).decode(),
                    "client": client,
                    "received_at": now,
                },
            )
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = (
            insert(feedback_table)
            .on_conflict_do_nothing(index_elements=["natural_key"])
            .returning(feedback_table.c.natural_key)
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(statement, list(rows.values()))
            stored = len(result.all())
        return StoreResult(received=len(items), stored=stored)

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(feedback_table))).scalar_one()

    async def rows(self) -> list[dict]:
        async with self.engine.connect() as conn:
            result = await conn.execute(select(feedback_table).order_by(feedback_table.c.id))
            return [dict(r._mapping) for r in result]

    async def aclose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged item survives a power cut too
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


__all__ = ["FeedbackStore", "ReceivedItem", "StoreResult", "database_url", "feedback_table", "natural_key"]
