"""The cohort run: read the export (in parallel) → group by patient on disk → score the patients (in
parallel) → `courses.csv`, `problems.csv`, `summary.json`, `report.html` (clinical-spec §10)."""

from __future__ import annotations

import csv
import gc
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TextIO

import orjson
from tqdm import tqdm  # type: ignore[import-untyped]

from service.cohort.analyze import COLUMNS, analyze_patient
from service.cohort.config import CohortRules
from service.cohort.export import (
    ChunkReport,
    ExportFile,
    chunks,
    cpu_count,
    discover,
    read_chunk,
    read_codes,
    shard_of,
)
from service.cohort.problems import Problem
from service.cohort.pseudonym import pseudonym
from service.cohort.registry import RegistryEntry, read_registry
from service.cohort.results import Results
from service.cohort.store import Medications, PartWriter, shard_count, shard_patients, spilled_problems


@dataclass(frozen=True)
class CohortOptions:
    export_dir: Path
    out_dir: Path
    as_of: date
    registry: Path | None = None
    key: bytes | None = None  # --pseudonymize
    quiet: bool = False
    workers: int = 0  # 0: every core
    work_dir: Path | None = None  # where the scratch store goes (default: a temporary directory)


@dataclass
class RunResult:
    exit_status: int
    message: str
    summary: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- worker side

_W: dict[str, Any] = {}


def _init_worker(work_dir: str, n_shards: int, rules: CohortRules, today: date, key: bytes | None) -> None:
    # Reading and scoring build acyclic JSON trees and rule results that reference counting frees; the
    # cyclic collector's passes over them (a shard's parsed lines are alive at once) cost a quarter of
    # the scoring step (200 patients: 1.44 → 1.07 s CPU). It runs once after each task instead, so that
    # a cycle a rule might leave is still freed, and memory stays bounded by one task.
    gc.freeze()
    gc.disable()
    codes = read_codes(rules.vs.lab_codes)
    _W.update(work_dir=Path(work_dir), n_shards=n_shards, rules=rules, today=today, key=key, writer=None, codes=codes)


def _read_task(c: Any) -> ChunkReport:
    cpu = time.process_time()
    if _W["writer"] is None:
        _W["writer"] = PartWriter(_W["work_dir"], _W["n_shards"])
    rep = read_chunk(c, _W["writer"], _W["codes"])
    gc.collect()
    rep.cpu = time.process_time() - cpu
    return rep


@dataclass
class ShardReport:
    rows: list[tuple[str, bytes]] = field(default_factory=list)
    problems: list[tuple[int, int, int, str, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    registry_seen: set[str] = field(default_factory=set)
    cpu: float = 0.0


def _shard_task(shard: int, registry: Mapping[str, list[RegistryEntry]], conditions_unreadable: bool) -> ShardReport:
    cpu = time.process_time()
    rules: CohortRules = _W["rules"]
    key: bytes | None = _W["key"]
    rep = ShardReport()
    meds = Medications(_W["work_dir"])
    for pid, rows in shard_patients(_W["work_dir"], shard):
        out_id = pseudonym(key, pid) if key else pid
        o = analyze_patient(pid, rows, rules, _W["today"], registry, meds, conditions_unreadable, out_id)
        rep.problems += o.problems
        rep.counts.update(o.counts)
        if o.counts["patients"] and pid in registry:
            rep.registry_seen.add(pid)
        if o.row is not None:
            rep.rows.append((out_id, orjson.dumps(o.row)))
    gc.collect()
    rep.cpu = time.process_time() - cpu
    return rep


# ---------------------------------------------------------------- main side


def _pool(workers: int, work_dir: Path, n_shards: int, rules: CohortRules, today: date, key: bytes | None) -> Any:
    """The worker processes, started before any thread of this process (tqdm's, the report libraries').

    fork on Linux when this process runs no other thread (the command line): the workers start in
    milliseconds with the rules already imported (forkserver cost ~0.2 s). forkserver otherwise (a test
    runner's threads): a fork of a threaded process could inherit a lock that another thread held."""
    method = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "forkserver"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["service.cohort.run"])
    pool = ProcessPoolExecutor(workers, ctx, _init_worker, (str(work_dir), n_shards, rules, today, key))
    pool.submit(int).result()  # with fork, every worker is started by the first task
    return pool


def _bar(quiet: bool, **kw: Any) -> Any:
    return tqdm(disable=quiet, file=sys.stderr, dynamic_ncols=True, leave=False, **kw)


def _preload_report_libraries() -> None:
    # matplotlib and scipy take a second or two to import; the main process only waits on its workers
    # meanwhile, so it imports them then.
    import service.cohort.report
    import service.cohort.summary  # noqa: F401


def run_cohort(opts: CohortOptions, rules: CohortRules) -> RunResult:
    started = time.perf_counter()
    files, others = discover(opts.export_dir)
    if not files:
        return RunResult(1, f"cohort: no .ndjson or .ndjson.gz files in {opts.export_dir}; nothing was read")
    registry: dict[str, list[RegistryEntry]] = {}
    problems: list[Problem] = []
    if opts.registry is not None:
        registry, problems = read_registry(opts.registry, rules.rules.tz)
    problems += [
        Problem(f.name, 0, "unknown-file-type", "its name does not start with a resource type")
        for f in files
        if f.type is None
    ]
    workers = opts.workers or cpu_count()
    n_shards = shard_count(sum(f.size for f in files), workers)
    scratch = Path(tempfile.mkdtemp(prefix="hematotox-cohort-", dir=opts.work_dir))
    try:
        timings: dict[str, float] = {}
        lap = time.perf_counter()
        with _pool(workers, scratch, n_shards, rules, opts.as_of, opts.key) as pool:
            threading.Thread(target=_preload_report_libraries, daemon=True).start()
            reports = _read_all(pool, files, opts.quiet)
            timings["read"], lap = time.perf_counter() - lap, time.perf_counter()
            bases = _line_bases(reports)
            by_id = {f.id: f for f in files}
            results = Results(scratch / "results.sqlite")
            # Into the table as they come: a file of millions of bad lines is never held here at once.
            for rep in reports:
                name, base = by_id[rep.file].name, bases[rep.file, rep.chunk]
                results.add_problems([(name, base + n, k, d) for n, k, d in rep.problems])
                rep.problems = []
                if rep.error is not None:
                    line = base + rep.lines
                    problems.append(Problem(name, line, "unreadable-file", f"reading stopped after line {line}"))
            for f, c, batch in spilled_problems(scratch):
                name, base = by_id[f].name, bases[f, c]
                results.add_problems([(name, base + n, k, d) for n, k, d in batch])
            cond_lost = sum(r.unattributed_condition_lines for r in reports) > 0
            counts, seen = _score_all(pool, n_shards, registry, cond_lost, results, by_id, bases, opts.quiet)
        timings["score"], lap = time.perf_counter() - lap, time.perf_counter()
        reg_name = opts.registry.name if opts.registry else ""
        problems += [
            Problem(reg_name, e.line, "registry-patient-missing", "")
            for pid in set(registry) - seen
            for e in registry[pid]
        ]
        results.add_problems([(p.file, p.line, p.kind, p.detail) for p in problems])
        result = _write_outputs(opts, rules, files, others, reports, counts, results, cond_lost, started)
        timings["write"] = time.perf_counter() - lap
        # CPU of every process (the workers report theirs): the work done, whatever else runs on the machine.
        timings["cpu"] = time.process_time() + sum(r.cpu for r in reports) + counts["_cpu_ms"] / 1000
        result.timings = timings
        result.message += " (" + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ")"
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _read_all(pool: Any, files: list[ExportFile], quiet: bool) -> list[ChunkReport]:
    todo = [c for f in files for c in chunks(f)]
    reports = []
    with _bar(quiet, total=sum(f.size for f in files), unit="B", unit_scale=True, desc="reading") as bar:
        futures: dict[Future[ChunkReport], int] = {
            pool.submit(_read_task, c): (c.end - c.start if not c.file.gz else c.file.size) for c in todo
        }
        for fut in as_completed(futures):
            reports.append(fut.result())
            bar.update(futures[fut])
    return sorted(reports, key=lambda r: (r.file, r.chunk))


def _line_bases(reports: list[ChunkReport]) -> dict[tuple[int, int], int]:
    """Line number before each chunk of a file (chunks count their own lines from 1)."""
    bases: dict[tuple[int, int], int] = {}
    running: dict[int, int] = {}
    for r in reports:
        bases[r.file, r.chunk] = running.get(r.file, 0)
        running[r.file] = bases[r.file, r.chunk] + r.lines
    return bases


def _score_all(
    pool: Any,
    n_shards: int,
    registry: dict[str, list[RegistryEntry]],
    cond_lost: bool,
    results: Results,
    by_id: dict[int, ExportFile],
    bases: dict[tuple[int, int], int],
    quiet: bool,
) -> tuple[Counter[str], set[str]]:
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    per_shard: list[dict[str, list[RegistryEntry]]] = [{} for _ in range(n_shards)]
    for pid, entries in registry.items():
        per_shard[shard_of(pid, n_shards)][pid] = entries
    with _bar(quiet, total=n_shards, unit="shard", desc="scoring") as bar:
        futures = [pool.submit(_shard_task, s, per_shard[s], cond_lost) for s in range(n_shards)]
        for fut in as_completed(futures):
            rep: ShardReport = fut.result()
            results.add_rows(rep.rows)
            results.add_problems([(by_id[f].name, bases[f, c] + n, k, d) for f, c, n, k, d in rep.problems])
            counts.update(rep.counts)
            counts["_cpu_ms"] += round(rep.cpu * 1000)
            seen |= rep.registry_seen
            bar.update(1)
            bar.set_postfix(patients=counts["patients"], refresh=False)
    return counts, seen


def write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _write_outputs(
    opts: CohortOptions,
    rules: CohortRules,
    files: list[ExportFile],
    others: list[str],
    reports: list[ChunkReport],
    counts: Counter[str],
    results: Results,
    cond_lost: bool,
    started: float,
) -> RunResult:
    from service.cohort.report import write_report
    from service.cohort.summary import build_summary

    opts.out_dir.mkdir(parents=True, exist_ok=True)
    course_rows = [orjson.loads(b) for b in results.rows()]
    write_csv(opts.out_dir / "courses.csv", COLUMNS, ([r[c] for c in COLUMNS] for r in course_rows))
    write_csv(opts.out_dir / "problems.csv", ("file", "line", "kind", "detail"), results.problems())
    types: Counter[str] = Counter()
    for r in reports:
        types.update(r.types)
    summary = build_summary(
        course_rows,
        rules,
        opts,
        inputs={
            "files": len(files),
            "otherFilesIgnored": others,
            "lines": sum(r.lines for r in reports),
            "bytes": sum(r.bytes for r in reports),
            "resourcesByType": dict(sorted(types.items())),
            "observationsOfCodesNoRuleReads": sum(r.not_read for r in reports),
            "patients": counts["patients"],
            "patientsWithoutCourse": counts["patients-without-course"],
            "courses": counts["courses"],
            "resourcesOfMissingPatients": counts["resources-of-missing-patients"],
            "conditionLinesUnreadableUnattributed": cond_lost,
        },
        problem_counts=results.problem_counts(),
        problem_examples=_examples(results.problems()),
    )
    (opts.out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    write_report(opts.out_dir / "report.html", summary)
    results.close()
    usable = counts["patients"] > 0
    n_problems = sum(summary["problems"]["counts"].values())
    g = summary["cohort"]["htGroups"]
    message = (
        f"cohort: {counts['patients']} patients, {counts['courses']} courses "
        f"(HT low {g['low']}, high {g['high']}, indeterminate {g['indeterminate']}), {n_problems} input problems; "
        f"wrote courses.csv, summary.json, report.html, problems.csv to {opts.out_dir} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    if not usable:
        message += " — nothing usable was read (no Patient with resources)"
    return RunResult(0 if usable else 1, message, summary)


def _examples(problems: Iterable[tuple[str, int, str, str]], per_kind: int = 10) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for file, line, kind, _ in problems:
        lst = out.setdefault(kind, [])
        if len(lst) < per_kind:
            lst.append(f"{file}:{line}" if line else file)
    return out


def print_result(result: RunResult, stream: TextIO = sys.stdout) -> None:
    print(result.message, file=stream)
