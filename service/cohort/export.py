"""Reading a Bulk Data export: which files, their resource type, and one chunk of lines → the work store.

Step one of the cohort run (`run.py`): every line is JSON-parsed once, checked, and stored as raw bytes
under its patient in a per-process SQLite part file (`store.py`); grouping happens there, on disk, so
that memory is bounded by a chunk and, later, by the largest patient, never by the export.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from service.clinical.fhirjson import patient_field, patient_ref_id, reference_text
from service.clinical.nrm import ECOG_LOINC
from service.cohort.problems import Kind
from service.cohort.store import FLUSH_BYTES, PartWriter, Row

# Resources the rules read, by patient; Medication is shared (a formulary), looked up by id.
PATIENT_TYPES = frozenset({"Observation", "Condition", "MedicationAdministration", "MedicationRequest", "Procedure"})
SUFFIXES = (".ndjson", ".ndjson.gz")
CHUNK_BYTES = 16 * 1024 * 1024  # one task of the reading step (plain files are split at line starts)
# A chunk's problems beyond this many go to the reader's spill file: a chunk of 16 MiB of blank lines would
# otherwise be 16 M tuples in memory (and a gzip file is one chunk).
PROBLEMS_HELD = 10_000

_PREFIX = re.compile(r"[A-Za-z]+")
_UNSEEN: Any = object()  # a reference not looked at yet in this chunk (None: looked at, no patient)
# A Patient reference inside a line that is not JSON: enough to say whose data was lost.
_LOOSE_REF = re.compile(rb'Patient/([A-Za-z0-9\-.]{1,64})"')


@dataclass(frozen=True)
class ExportFile:
    id: int
    name: str  # relative to the export directory, "/"-separated
    path: Path
    type: str | None  # the name's prefix (`Observation*.ndjson[.gz]`), None when it has none
    gz: bool
    size: int


def discover(export_dir: Path) -> tuple[list[ExportFile], list[str]]:
    """The export's NDJSON files in name order, and the names of other files (ignored, listed)."""
    files: list[ExportFile] = []
    other: list[str] = []
    for path in sorted(p for p in export_dir.rglob("*") if p.is_file()):
        name = path.relative_to(export_dir).as_posix()
        if not path.name.endswith(SUFFIXES):
            other.append(name)
            continue
        m = _PREFIX.match(path.name)
        files.append(
            ExportFile(
                len(files), name, path, m.group(0) if m else None, path.name.endswith(".gz"), path.stat().st_size
            )
        )
    return files, other


@dataclass(frozen=True)
class Chunk:
    file: ExportFile
    index: int
    start: int
    end: int  # exclusive; the chunk owns every line that starts in [start, end)


def chunks(f: ExportFile) -> list[Chunk]:
    if f.gz or f.size <= CHUNK_BYTES:
        return [Chunk(f, 0, 0, max(f.size, 1) if not f.gz else 1 << 62)]
    return [Chunk(f, i, s, min(s + CHUNK_BYTES, f.size)) for i, s in enumerate(range(0, f.size, CHUNK_BYTES))]


@dataclass
class ChunkReport:
    file: int
    chunk: int
    lines: int = 0
    bytes: int = 0
    types: Counter[str] = field(default_factory=Counter)
    # (line within the chunk, kind, detail): made absolute once every chunk's line count is known.
    problems: list[tuple[int, Kind, str]] = field(default_factory=list)
    # Lines of a Condition file that are not JSON and name no patient: anyone's diabetes may be in them.
    unattributed_condition_lines: int = 0
    not_read: int = 0  # Observations of codes no rule reads (vital signs, other labs): not kept
    error: str | None = None
    cpu: float = 0.0


def _lines(c: Chunk, rep: ChunkReport) -> Iterator[bytes]:
    """The chunk's lines, counting their bytes into ``rep``."""
    if c.file.gz:
        with gzip.open(c.file.path, "rb") as g:
            for line in g:
                rep.bytes += len(line)
                yield line
        return
    with open(c.file.path, "rb") as f:
        pos = c.start
        if pos:
            f.seek(pos - 1)
            if f.read(1) != b"\n":
                pos += len(f.readline())  # the line that started before this chunk belongs to the previous one
        first, end = pos, c.end
        try:
            for line in f:  # the file's own line iterator: a third of the cost of readline() calls
                if pos >= end:
                    break
                pos += len(line)
                yield line
        finally:
            rep.bytes = pos - first  # also when reading fails part-way: what was read


def patient_of(resource: dict[str, object]) -> str | None:
    # The reference forms the clinical rules read as a patient (fhirjson, as `owner` reads them): anything
    # else could not be matched to a patient and is reported instead.
    return patient_ref_id(reference_text(patient_field(resource)))


def shard_of(patient: str, n_shards: int) -> int:
    # crc32, not hash(): str hashes differ between processes (PYTHONHASHSEED).
    return zlib.crc32(patient.encode()) % n_shards


LOINC = "http://loinc.org"


def read_codes(lab_codes: Iterable[str]) -> frozenset[str]:
    """The LOINC codes of every Observation a rule reads (§5.1 labs, ECOG): the others are not kept."""
    return frozenset(lab_codes) | {ECOG_LOINC}


def _read_by_rules(res: dict[str, Any], codes: frozenset[str]) -> bool:
    # The same selection as a hook's prefetch (searches by code): a rule never looks at any other
    # Observation (labs._head and nrm.ecog take only LOINC codings of their own codes).
    code = res.get("code")
    coding = code.get("coding") if isinstance(code, dict) else None
    if not isinstance(coding, list):
        return False
    for c in coding:
        if isinstance(c, dict) and c.get("system") == LOINC:
            k = c.get("code")
            if isinstance(k, str) and k in codes:
                return True
    return False


def read_chunk(c: Chunk, writer: PartWriter, codes: frozenset[str]) -> ChunkReport:
    rep = ChunkReport(c.file.id, c.index)
    ftype = c.file.type
    fid, ci = c.file.id, c.index
    buckets, problems = writer.buckets, rep.problems
    n_shards = len(buckets)
    # A patient's reference repeats on every one of its lines: its id and shard bucket are found once.
    owners_of: dict[str, tuple[str, list[Row]] | None] = {}
    unread: dict[str, list[int]] = {}  # by patient: lines of Observations no rule reads
    types: dict[str, int] = {}
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    buffered = n = 0
    try:
        for n, raw in enumerate(_lines(c, rep), start=1):
            # What this chunk holds in memory stays bounded, whichever branch below added to it.
            if buffered >= FLUSH_BYTES:
                _flush(writer, unread, fid, ci)
                buffered = 0
            if len(problems) >= PROBLEMS_HELD:
                writer.spill_problems(fid, ci, problems)
                problems.clear()
            line = raw.strip()
            if not line:
                problems.append((n, "blank-line", ""))
                continue
            try:
                res = loads(line)
            except decode_error:
                problems.append((n, "malformed-json", ""))
                owners = set(_LOOSE_REF.findall(line))
                if len(owners) == 1:
                    who = owners.pop().decode()
                    buckets[shard_of(who, n_shards)].append((who, f"!{ftype or ''}", fid, ci, n, b""))
                    buffered += 64
                elif ftype == "Condition":
                    rep.unattributed_condition_lines += 1
                continue
            rtype = res.get("resourceType") if type(res) is dict else None
            if type(rtype) is not str:
                problems.append((n, "not-a-resource", ""))
                continue
            types[rtype] = types.get(rtype, 0) + 1
            if rtype != ftype and ftype is not None:
                problems.append((n, "type-mismatch", f"{rtype} in a file of {ftype} (used as {rtype})"))
            if rtype in PATIENT_TYPES:
                ref = reference_text(patient_field(res))
                if ref is None:
                    owner = None
                elif (owner := owners_of.get(ref, _UNSEEN)) is _UNSEEN:
                    pid = patient_of(res)
                    owner = owners_of[ref] = None if pid is None else (pid, buckets[shard_of(pid, n_shards)])
                if rtype == "Observation" and not _read_by_rules(res, codes):
                    rep.not_read += 1
                    if owner is not None:  # kept as a place only: a missing patient is still reported
                        unread.setdefault(owner[0], []).append(n)
                        buffered += 40  # a Python int in a list
                    continue
                if owner is None:
                    problems.append((n, "no-patient-reference", f"{rtype} without a Patient/<id> subject"))
                    continue
                owner[1].append((owner[0], rtype, fid, ci, n, line))
            elif rtype == "Patient":
                pid = res.get("id")
                if not (isinstance(pid, str) and pid):
                    problems.append((n, "no-patient-reference", "a Patient without id"))
                    continue
                buckets[shard_of(pid, n_shards)].append((pid, rtype, fid, ci, n, line))
            elif rtype == "Medication":
                mid = res.get("id")
                if not (isinstance(mid, str) and mid):
                    continue
                writer.add_medication(mid, line)
            else:
                continue
            buffered += len(line) + 64
    except (OSError, EOFError, zlib.error) as exc:
        # A corrupt or truncated gzip stream: what was read stands, the rest of the file is reported.
        rep.error = f"{type(exc).__name__}: {exc}"
    _flush(writer, unread, fid, ci)
    rep.lines = n
    rep.types.update(types)
    return rep


def _flush(writer: PartWriter, unread: dict[str, list[int]], file: int, chunk: int) -> None:
    n_shards = len(writer.buckets)
    for pid, lines in unread.items():
        writer.add_unread(shard_of(pid, n_shards), pid, file, chunk, lines)
    unread.clear()
    writer.commit()


def baseline_read_parse(files: list[ExportFile]) -> int:
    """Only read and JSON-parse every line (bench/cohort_scale.py's yardstick); returns the line count."""
    n = 0
    for f in files:
        opener = gzip.open if f.gz else open
        with opener(f.path, "rb") as fh:
            for line in fh:
                n += 1
                with contextlib.suppress(orjson.JSONDecodeError):
                    orjson.loads(line)
    return n


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
