"""JSON-lines logging: one object per line, correlated by hookInstance.

Only fields put under ``extra={"event": {...}}`` are emitted besides the message, so a log call
cannot leak a request body or a token by accident.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            line.update(event)
        if record.exc_info:
            # Exception type and location only: messages of third-party exceptions may echo data.
            etype, _, tb = record.exc_info
            frames = []
            while tb is not None:
                frames.append(f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}")
                tb = tb.tb_next
            line["error"] = {"type": etype.__name__ if etype else None, "at": frames[-5:]}
        return orjson.dumps(line).decode()


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log would print request lines; hook lines are ours.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Libraries that log what passes through them at INFO/DEBUG: httpx logs every request URL (a FHIR
    # query names the patient), the database drivers log statements with their parameters (feedback
    # comments). Only their warnings and errors are kept, at any configured level.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


QUIET_LIBRARIES = ("httpx", "httpcore", "hpack", "aiosqlite", "asyncpg", "sqlalchemy", "multipart", "python_multipart")
