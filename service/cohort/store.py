"""The on-disk grouping step: each reading process appends every line to its patient's shard file;
each scoring task then reads one shard, sorts it by patient and hands the patients out one by one.

Hash-partitioned spill files rather than SQLite or DuckDB, measured: reading 600,000 rows back out of
SQLite (by index or clustered) cost 4–9 µs a row, more than parsing the line, while appending pickled
batches and reading them back costs well under 1 µs; DuckDB would parse JSON in C++, but the rules need
every resource as a Python dict anyway. Memory stays bounded: a reader buffers at most `FLUSH_BYTES`,
and a scoring task holds one shard's raw lines (the shard count grows with the export, so a shard stays
near `SHARD_BYTES`) plus the parsed resources of one patient at a time.
"""

from __future__ import annotations

import os
import pickle
from array import array
from collections.abc import Iterator, Sequence
from itertools import groupby
from operator import itemgetter
from pathlib import Path

Row = tuple[str, str, int, int, int, bytes]  # patient, type, file, chunk, line, body
# A row of type UNREAD stands for every Observation of a code no rule reads that one chunk holds for
# the patient: line 0, and the body the chunk's line numbers (`unread_lines`). They are kept only to
# be reported if the patient is missing; one row each would be half of all rows.
UNREAD = "~Observation"

FLUSH_BYTES = 16 * 1024 * 1024
SHARD_BYTES = 16 * 1024 * 1024


def shard_count(export_bytes: int, workers: int) -> int:
    # At least 16 a worker: the last shard to finish leaves the other cores idle, so shards stay small.
    return max(16 * workers, -(-export_bytes // SHARD_BYTES))


class PartWriter:
    """One reading process's spill files: batches of rows appended to `shard-<n>-<pid>.pkl`.

    The reader appends rows to `buckets[shard]` itself and calls `commit` when it has buffered
    `FLUSH_BYTES` (a method call per row was a fifth of the reading step); commit empties the buckets in
    place, so that a reader may keep a patient's bucket at hand."""

    def __init__(self, work_dir: Path, n_shards: int) -> None:
        self.dir = work_dir
        self.tag = os.getpid()
        self.buckets: list[list[Row]] = [[] for _ in range(n_shards)]
        self.meds: list[tuple[str, bytes]] = []

    def add_unread(self, shard: int, patient: str, file: int, chunk: int, lines: list[int]) -> None:
        self.buckets[shard].append((patient, UNREAD, file, chunk, 0, array("L", lines).tobytes()))

    def spill_problems(self, file: int, chunk: int, problems: Sequence[tuple[int, str, str]]) -> None:
        """A chunk's problems so far, (line in the chunk, kind, detail), out of memory."""
        with open(self.dir / f"problems-{self.tag}.pkl", "ab") as f:
            pickle.dump((file, chunk, problems), f, protocol=pickle.HIGHEST_PROTOCOL)

    def add_medication(self, mid: str, body: bytes) -> None:
        self.meds.append((mid, body))

    def commit(self) -> None:
        for shard, rows in enumerate(self.buckets):
            if rows:
                with open(self.dir / f"shard-{shard:05d}-{self.tag}.pkl", "ab") as f:
                    pickle.dump(rows, f, protocol=pickle.HIGHEST_PROTOCOL)
                rows.clear()
        if self.meds:
            with open(self.dir / f"medications-{self.tag}.pkl", "ab") as f:
                pickle.dump(self.meds, f, protocol=pickle.HIGHEST_PROTOCOL)
            self.meds = []


def unread_lines(row: Row) -> list[int]:
    return array("L", row[5]).tolist()


def _batches(path: Path) -> Iterator[list[Row]]:
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


def spilled_problems(work_dir: Path) -> Iterator[tuple[int, int, list[tuple[int, str, str]]]]:
    """(file, chunk, problems) batches the readers spilled (`PartWriter.spill_problems`)."""
    for path in sorted(work_dir.glob("problems-*.pkl")):
        yield from _batches(path)  # type: ignore[misc]


def shard_patients(work_dir: Path, shard: int) -> Iterator[tuple[str, list[Row]]]:
    """Each patient of the shard with all its rows, in patient order."""
    rows: list[Row] = []
    for path in sorted(work_dir.glob(f"shard-{shard:05d}-*.pkl")):
        for batch in _batches(path):
            rows += batch
    rows.sort(key=itemgetter(0))
    for pid, group in groupby(rows, key=itemgetter(0)):
        yield pid, list(group)


class Medications:
    """Medication resources by id: a formulary shared by all patients, small next to the export."""

    def __init__(self, work_dir: Path) -> None:
        self.by_id: dict[str, list[bytes]] = {}
        for path in sorted(work_dir.glob("medications-*.pkl")):
            for batch in _batches(path):
                for mid, body in batch:  # type: ignore[misc]
                    self.by_id.setdefault(mid, []).append(body)
        for mid in self.by_id:
            self.by_id[mid] = sorted(set(self.by_id[mid]))

    def get(self, mid: str) -> list[bytes]:
        return self.by_id.get(mid, [])
