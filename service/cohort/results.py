"""The main process's scratch table of course rows and problems, streamed out sorted at the end.

Rows arrive from the scoring tasks in any order; SQLite sorts them (by output id) on disk, so the
outputs never depend on which task finished first and the process never holds every row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path


class Results:
    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=OFF")  # a scratch file, rebuilt on every run
        self.con.execute("PRAGMA synchronous=OFF")
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
