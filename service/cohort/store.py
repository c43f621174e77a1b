"""The on-disk grouping step: SQLite part files, one per reading process, then read back by patient.

SQLite (the standard library's) rather than DuckDB: the rules need every resource as a Python dict
anyway, so an engine that parses JSON in C++ would save nothing that matters, while SQLite adds no
dependency, writes a part per process without coordination, and its index gives each patient's rows
in order with memory bounded by that patient (its sorter and page cache spill to disk).
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterator
from itertools import groupby
from operator import itemgetter
from pathlib import Path

Row = tuple[str, str, int, int, int, bytes]  # patient, type, file, chunk, line, body

_SCHEMA = """
CREATE TABLE IF NOT EXISTS res (shard INTEGER, patient TEXT, type TEXT, file INTEGER, chunk INTEGER,
                                line INTEGER, body BLOB);
CREATE TABLE IF NOT EXISTS meds (id TEXT, body BLOB);
"""
_BATCH = 20_000


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    # A scratch store, rebuilt on every run: no journal, no fsync.
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA temp_store=FILE")
    return con


class PartWriter:
    """One reading process's part file; rows are written in batches, committed per chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con = _connect(path)
        self.con.executescript(_SCHEMA)
        self.rows: list[tuple[int, str, str, int, int, int, bytes]] = []
        self.meds: list[tuple[str, bytes]] = []

    def add(self, shard: int, patient: str, rtype: str, file: int, chunk: int, line: int, body: bytes) -> None:
        self.rows.append((shard, patient, rtype, file, chunk, line, body))
        if len(self.rows) >= _BATCH:
            self._flush()

    def add_medication(self, mid: str, body: bytes) -> None:
        self.meds.append((mid, body))

    def _flush(self) -> None:
        self.con.execute("BEGIN")
        self.con.executemany("INSERT INTO res VALUES (?,?,?,?,?,?,?)", self.rows)
        self.con.executemany("INSERT INTO meds VALUES (?,?)", self.meds)
        self.con.execute("COMMIT")
        self.rows.clear()
        self.meds.clear()

    def commit(self) -> None:
        self._flush()


def index_part(path: Path) -> None:
    con = _connect(path)
    con.execute("CREATE INDEX IF NOT EXISTS res_by_patient ON res (shard, patient)")
    con.execute("CREATE INDEX IF NOT EXISTS meds_by_id ON meds (id)")
    con.close()


def shard_patients(parts: list[Path], shard: int) -> Iterator[tuple[str, list[Row]]]:
    """Each patient of the shard with all its rows, patient by patient (merged over the parts)."""
    cons = [sqlite3.connect(f"file:{p}?mode=ro", uri=True) for p in parts]
    try:
        streams = [
            c.execute(
                "SELECT patient, type, file, chunk, line, body FROM res WHERE shard = ? ORDER BY patient", (shard,)
            )
            for c in cons
        ]
        merged = heapq.merge(*streams, key=itemgetter(0))
        for pid, rows in groupby(merged, key=itemgetter(0)):
            yield pid, list(rows)
    finally:
        for c in cons:
            c.close()


class Medications:
    """Medication resources by id (a formulary, shared by all patients), read from the parts on demand."""

    def __init__(self, parts: list[Path]) -> None:
        self.cons = [sqlite3.connect(f"file:{p}?mode=ro", uri=True) for p in parts]
        self.cache: dict[str, list[bytes]] = {}

    def get(self, mid: str) -> list[bytes]:
        if mid not in self.cache:
            found: list[bytes] = []
            for c in self.cons:
                found += [b for (b,) in c.execute("SELECT body FROM meds WHERE id = ?", (mid,))]
            self.cache[mid] = sorted(set(found))
        return self.cache[mid]

    def close(self) -> None:
        for c in self.cons:
            c.close()


class Results:
    """The main process's table of course rows (streamed out sorted by patient) and problems."""

    def __init__(self, path: Path) -> None:
        self.con = _connect(path)
        self.con.executescript(
            "CREATE TABLE rows (patient TEXT, body BLOB);"
            "CREATE TABLE problems (file TEXT, line INTEGER, kind TEXT, detail TEXT);"
        )

    def add_rows(self, rows: list[tuple[str, bytes]]) -> None:
        self.con.execute("BEGIN")
        self.con.executemany("INSERT INTO rows VALUES (?,?)", rows)
        self.con.execute("COMMIT")

    def add_problems(self, problems: list[tuple[str, int, str, str]]) -> None:
        self.con.execute("BEGIN")
        self.con.executemany("INSERT INTO problems VALUES (?,?,?,?)", problems)
        self.con.execute("COMMIT")

    def rows(self) -> Iterator[bytes]:
        for (body,) in self.con.execute("SELECT body FROM rows ORDER BY patient, body"):
            yield body

    def problems(self) -> Iterator[tuple[str, int, str, str]]:
        yield from self.con.execute("SELECT file, line, kind, detail FROM problems ORDER BY file, line, kind, detail")

    def problem_counts(self) -> dict[str, int]:
        return dict(self.con.execute("SELECT kind, count(*) FROM problems GROUP BY kind ORDER BY kind"))

    def close(self) -> None:
        self.con.close()
