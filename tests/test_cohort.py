"""`hematotox-cds cohort` end to end (clinical-spec §10): the command, run on generated exports whose
truth is planted (service/cohort/synthetic.py), must recover that truth exactly."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from scipy import stats

from service.cohort import export
from service.cohort.analyze import COLUMNS, TRI_MEASURES
from service.cohort.pseudonym import pseudonym
from service.cohort.synthetic import AS_OF, write_export, write_truth
from service.web.cli import main

N, SEED = 40, 14


def _run(export_dir: Path, out: Path, *extra: str) -> int:
    return main(["cohort", str(export_dir), "--out", str(out), "--as-of", AS_OF.isoformat(), "--quiet", *extra])


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("cohort")
    w = write_export(where / "export", N, SEED)
    write_truth(where, w, SEED)
    assert _run(where / "export", where / "out", "--registry", str(where / "registry.csv")) == 0
    return where


def test_courses_csv_is_the_planted_truth(demo: Path) -> None:
    got = (demo / "out" / "courses.csv").read_text(encoding="utf-8")
    want = (demo / "truth.csv").read_text(encoding="utf-8")
    assert got.splitlines()[0] == ",".join(COLUMNS)
    assert got == want


def test_the_cohort_has_every_kind_of_course(demo: Path) -> None:
    """The generator's coverage, so that the exact comparison above means something."""
    rows = _rows(demo / "truth.csv")
    assert {r["phenotype"] for r in rows} == {"quick", "intermittent", "aplastic", "unclassified", "undetermined"}
    assert {r["ht_group"] for r in rows} == {"low", "high", "indeterminate"}
    assert {r["ld_start_source"] for r in rows} == {"administration", "order", "assumed", "registry"}
    assert any(r["severe_neutropenia_days_min"] != r["severe_neutropenia_days_max"] for r in rows)  # gaps
    assert any(r["profound_neutropenia"] == "yes" for r in rows)  # censored "<0.1"
    assert any(r["live"] == "yes" for r in rows)
    assert any("later-courses" in r["flags"] for r in rows)
    assert {r["diabetes"] for r in rows} == {"yes", "no"}
    assert {r["ht_provisional_group"] for r in rows} == {"", "high"}


def test_summary_counts_are_the_planted_ones(demo: Path) -> None:
    s = json.loads((demo / "out" / "summary.json").read_text())
    truth = json.loads((demo / "truth.json").read_text())
    rows = _rows(demo / "truth.csv")
    assert s["inputs"]["patients"] == truth["patients"]
    assert s["inputs"]["patientsWithoutCourse"] == truth["patientsWithoutCourse"]
    assert s["cohort"]["courses"] == truth["courses"]
    assert {k: v for k, v in s["problems"]["counts"].items() if v} == {k: v for k, v in truth["problems"].items() if v}
    assert s["inputs"]["resourcesOfMissingPatients"] == truth["problems"]["missing-patient"]
    groups = Counter(r["ht_group"] for r in rows)
    assert s["cohort"]["htGroups"] == {g: groups[g] for g in ("low", "high", "indeterminate")}
    for row in s["table2"]["rows"]:
        m = row["measure"]
        for g in ("low", "high"):
            answers = Counter(r[m] for r in rows if r["ht_group"] == g)
            assert row[g]["yes"] == answers["yes"], (m, g)
            assert row[g]["known"] == answers["yes"] + answers["no"], (m, g)
            assert row[g]["unknown"] == answers["unknown"], (m, g)
        if row["p"] is not None:
            hy, hk, ly, lk = row["high"]["yes"], row["high"]["known"], row["low"]["yes"], row["low"]["known"]
            assert row["p"] == pytest.approx(stats.fisher_exact([[hy, hk - hy], [ly, lk - ly]]).pvalue, abs=1e-6)
    assert {row["measure"] for row in s["table2"]["rows"]} == set(TRI_MEASURES)
    # Fig. 1D at HT >= 2: counted over courses with a known group and a known outcome.
    known = [r for r in rows if r["ht_group"] != "indeterminate" and r["severe_neutropenia_14"] != "unknown"]
    tp = sum(r["ht_group"] == "high" and r["severe_neutropenia_14"] == "yes" for r in known)
    fn = sum(r["ht_group"] == "low" and r["severe_neutropenia_14"] == "yes" for r in known)
    assert (s["fig1d"]["atHt2"]["tp"], s["fig1d"]["atHt2"]["fn"]) == (tp, fn)
    # Fig. 1B: exact day counts only; the interval ones are counted apart.
    exact = [r for r in rows if r["severe_neutropenia_days_min"] == r["severe_neutropenia_days_max"]]
    assert s["fig1b"]["low"]["n"] + s["fig1b"]["high"]["n"] == sum(r["ht_group"] != "indeterminate" for r in exact)
    assert s["rulesetVersion"].startswith("1.")
    assert s["paper"]["fig1d"]["auc"] == 0.82


def test_report_is_one_self_contained_page_of_aggregates(demo: Path) -> None:
    page = (demo / "out" / "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 4  # Fig. 1A-D inlined
    assert "http://" not in page.replace("http://www.w3.org/", "")  # nothing fetched, nothing linked
    assert "https://" not in page and "<link" not in page and "<script" not in page
    for r in _rows(demo / "truth.csv"):
        assert r["patient"] not in page
    assert "61.9%" in page and "AUC 0.82" in page  # the paper's figures beside the site's


def test_problems_csv_names_file_and_line_without_ids(demo: Path) -> None:
    problems = _rows(demo / "out" / "problems.csv")
    assert len(problems) == sum(json.loads((demo / "truth.json").read_text())["problems"].values())
    lines = {}
    for f in (demo / "export").iterdir():
        lines[f.name] = f.read_bytes().split(b"\n")
    for p in problems:
        assert p["file"] in lines and int(p["line"]) >= 1
        text = lines[p["file"]][int(p["line"]) - 1]
        if p["kind"] == "malformed-json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(text)
        if p["kind"] == "missing-patient":
            assert b"ghost-1" in text
        assert "pt-" not in p["detail"] and "ghost" not in p["detail"]


def test_line_and_file_order_and_gzip_do_not_change_the_answer(demo: Path, tmp_path: Path) -> None:
    w = write_export(tmp_path / "export", N, SEED, gz=True, observation_files=5, shuffle_seed=99)
    assert all(f.name.endswith(".ndjson.gz") for f in (tmp_path / "export").iterdir())
    assert _run(tmp_path / "export", tmp_path / "out", "--registry", str(demo / "registry.csv")) == 0
    assert (tmp_path / "out" / "courses.csv").read_bytes() == (demo / "out" / "courses.csv").read_bytes()
    a = json.loads((tmp_path / "out" / "summary.json").read_text())
    b = json.loads((demo / "out" / "summary.json").read_text())
    for s in (a, b):  # the places of problems (file names, lines) move with the files; their counts do not
        del s["problems"]["examples"], s["inputs"]["files"], s["inputs"]["bytes"]
    assert a == b
    assert len(w.planted) == N


def test_chunked_reading_gives_the_same_answer_and_lines(demo: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(export, "CHUNK_BYTES", 64 * 1024)  # each Observation file in many chunks
    assert _run(demo / "export", tmp_path / "out", "--registry", str(demo / "registry.csv")) == 0
    for name in ("courses.csv", "problems.csv", "summary.json"):
        assert (tmp_path / "out" / name).read_bytes() == (demo / "out" / name).read_bytes(), name


def test_pseudonymize_replaces_every_patient_id(demo: Path, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"0123456789abcdef-site-secret\n")
    assert (
        _run(demo / "export", tmp_path / "out", "--registry", str(demo / "registry.csv"), "--pseudonymize", str(key))
        == 0
    )
    truth = _rows(demo / "truth.csv")
    got = _rows(tmp_path / "out" / "courses.csv")
    want = {pseudonym(b"0123456789abcdef-site-secret", r["patient"]): r for r in truth}
    assert {r["patient"] for r in got} == set(want)
    for r in got:
        assert {k: v for k, v in r.items() if k != "patient"} == {
            k: v for k, v in want[r["patient"]].items() if k != "patient"
        }
    for f in (tmp_path / "out").iterdir():
        text = f.read_text(encoding="utf-8")
        assert not any(r["patient"] in text for r in truth), f.name


def test_short_key_is_refused(demo: Path, tmp_path: Path, capsys) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"short")
    assert _run(demo / "export", tmp_path / "out", "--pseudonymize", str(key)) == 2
    assert "at least 16 are needed" in capsys.readouterr().err


def test_without_the_registry_its_patients_have_no_course(demo: Path, tmp_path: Path) -> None:
    assert _run(demo / "export", tmp_path / "out") == 0
    registry = {r["patient"] for r in _rows(demo / "registry.csv")}
    got = {r["patient"] for r in _rows(tmp_path / "out" / "courses.csv")}
    assert registry and not registry & got
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["inputs"]["patientsWithoutCourse"] == 2 + len(registry)


def test_registry_override_and_its_bad_rows(demo: Path, tmp_path: Path) -> None:
    truth = {r["patient"]: r for r in _rows(demo / "truth.csv")}
    pid = next(p for p, r in truth.items() if r["ld_start_source"] == "administration" and r["courses"] == "1")
    reg = tmp_path / "registry.csv"
    reg.write_text(
        "patient,infusion_date,ld_start\n"
        f"{pid},{truth[pid]['day0']},{truth[pid]['day0'][:8]}01\n"  # a registry LD start replaces the export's
        "nobody-here,2024-01-01\n"
        f"{pid},not-a-date\n"
        "too,many,cells,here\n",
        encoding="utf-8",
    )
    assert _run(demo / "export", tmp_path / "out", "--registry", str(reg)) == 0
    row = next(r for r in _rows(tmp_path / "out" / "courses.csv") if r["patient"] == pid)
    assert (row["ld_start_source"], row["ld_start"]) == ("registry", f"{truth[pid]['day0'][:8]}01")
    assert row["day0"] == truth[pid]["day0"] and "registry" in row["flags"].split("|")
    problems = _rows(tmp_path / "out" / "problems.csv")
    assert [(p["line"], p["kind"]) for p in problems if p["file"] == "registry.csv"] == [
        ("3", "registry-patient-missing"),
        ("4", "registry-row"),
        ("5", "registry-row"),
    ]


def test_an_unreadable_condition_line_makes_diabetes_unknown(demo: Path, tmp_path: Path) -> None:
    exp = tmp_path / "export"
    exp.mkdir()
    for f in (demo / "export").iterdir():
        (exp / f.name).write_bytes(f.read_bytes())
    with (exp / "Condition.ndjson").open("ab") as f:
        f.write(b'{"resourceType":"Condition","code":{"coding":[{"system":"http://snomed.info/sct","co\n')
    assert _run(exp, tmp_path / "out", "--registry", str(demo / "registry.csv")) == 0
    for r in _rows(tmp_path / "out" / "courses.csv"):
        if r["diabetes"] != "yes":
            assert r["diabetes"] == "unknown" and "condition-unreadable" in r["flags"]


def test_nothing_usable_exits_non_zero(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(empty, tmp_path / "out1") == 1
    assert "nothing was read" in capsys.readouterr().err
    junk = tmp_path / "junk"
    junk.mkdir()
    with gzip.open(junk / "Observation.ndjson.gz", "wb") as f:
        f.write(b"not json\n{}\n")
    (junk / "Patient.ndjson").write_bytes(b'{"resourceType":"Observation","subject":{"reference":"Patient/x"}}\n')
    assert _run(junk, tmp_path / "out2") == 1
    s = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert s["problems"]["counts"]["malformed-json"] == 1 and s["problems"]["counts"]["missing-patient"] == 1
    assert s["problems"]["counts"]["type-mismatch"] == 1 and s["problems"]["counts"]["not-a-resource"] == 1


def test_help_explains_inputs_and_phi(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["cohort", "--help"])
    text = capsys.readouterr().out
    assert "PHI" in text and "--pseudonymize" in text and "--registry" in text and ".ndjson.gz" in text


def test_the_shipped_demo_is_what_the_generator_writes(tmp_path: Path) -> None:
    """examples/cohort-demo/ (README's command) is the seeded generator's output, byte for byte."""
    shipped = Path(__file__).resolve().parent.parent / "examples" / "cohort-demo"
    w = write_export(tmp_path / "export", N, SEED, gz=True)
    write_truth(tmp_path, w, SEED)
    names = sorted(p.relative_to(shipped).as_posix() for p in shipped.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    for name in names:
        assert (shipped / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_an_infusion_without_a_date_is_reported_at_its_line(demo: Path, tmp_path: Path) -> None:
    exp = tmp_path / "export"
    shutil.copytree(demo / "export", exp)
    pid = _rows(demo / "truth.csv")[0]["patient"]
    undated = {
        "resourceType": "MedicationAdministration",
        "id": "undated-cart",
        "status": "completed",
        "medicationCodeableConcept": {"text": "Abecma (idecabtagene vicleucel)"},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "sometime in May",
    }
    path = exp / "MedicationAdministration.ndjson"
    n = len(path.read_bytes().splitlines())
    with path.open("ab") as f:
        f.write(json.dumps(undated).encode() + b"\n")
    assert _run(exp, tmp_path / "out", "--registry", str(demo / "registry.csv")) == 0
    problems = [p for p in _rows(tmp_path / "out" / "problems.csv") if p["kind"] == "infusion-without-date"]
    assert [(p["file"], p["line"]) for p in problems] == [("MedicationAdministration.ndjson", str(n + 1))]
    row = next(r for r in _rows(tmp_path / "out" / "courses.csv") if r["patient"] == pid)
    assert "infusion-without-date" in row["flags"].split("|")
    assert row["day0"] == _rows(demo / "truth.csv")[0]["day0"]  # the dated infusion still makes day 0


HOSTILE = [
    b"42",
    b'"just a string"',
    b"null",
    b'{"resourceType": 5}',
    b'{"resourceType": "Observation", "subject": "Patient/pt-14-00000"}',
    b'{"resourceType": "Observation", "subject": {"reference": ["Patient/pt-14-00000"]}}',
    b'{"resourceType": "Observation", "subject": {"reference": "Patient/../../etc/passwd"}}',
    b'{"resourceType": "Observation", "subject": {"reference": "Patient/pt-14-00000"}, "code": []}',
    b'{"resourceType": "Observation", "subject": {"reference": "Patient/pt-14-00000"},'
    b' "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]}, "status": "final",'
    b' "effectiveDateTime": {"a": 1}, "valueQuantity": {"value": "NaN", "unit": ["x"]}}',
    b'{"resourceType": "Observation", "subject": {"reference": "Patient/pt-14-00000"},'
    b' "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]}, "status": "final",'
    b' "effectiveDateTime": "2023-01-12T07:00:00+00:00", "valueQuantity": {"value": 1e999, "code": {}}}',
    b'{"resourceType": "MedicationAdministration", "subject": {"reference": "Patient/pt-14-00000"},'
    b' "medicationReference": {"reference": "Medication/nope"}, "effectivePeriod": "yesterday"}',
    b'{"resourceType": "Condition", "subject": {"reference": "Patient/pt-14-00000"}, "code": "diabetes"}',
    b'{"resourceType": "Patient", "id": {"x": 1}}',
    b'{"resourceType": "Patient"}',
    b'{"resourceType": "Medication", "id": 7}',
    '{"resourceType": "Observation", "id": "\u00e9\u00e8", "subject": {"reference": "Patient/\u2603"}}'.encode(),
]


def test_hostile_lines_and_a_corrupt_gzip_never_crash_the_command(demo: Path, tmp_path: Path) -> None:
    exp = tmp_path / "export"
    shutil.copytree(demo / "export", exp)
    with (exp / "Observation.000.ndjson").open("ab") as f:
        f.write(b"\n".join(HOSTILE) + b"\n")
    good = gzip.compress(b'{"resourceType":"Patient","id":"late-1"}\n' * 50)
    (exp / "Patient.extra.ndjson.gz").write_bytes(good[: len(good) // 2])  # cut short
    (exp / "1.Observation.ndjson").write_bytes(b"")
    (exp / "manifest.json").write_text("{}")
    assert _run(exp, tmp_path / "out", "--registry", str(demo / "registry.csv")) == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    counts = s["problems"]["counts"]
    assert counts["unreadable-file"] == 1 and counts["unknown-file-type"] == 1
    assert counts["not-a-resource"] >= 4 and counts["no-patient-reference"] >= 2
    assert s["inputs"]["observationsOfCodesNoRuleReads"] >= 4  # no code a rule reads: counted, not kept
    assert s["inputs"]["otherFilesIgnored"] == ["manifest.json"]
    # The planted courses still come out as planted (the hostile lines add nothing usable to them),
    # apart from pt-14-00000's diabetes-free Condition and undated infusion, which only flag.
    got = {r["patient"]: r for r in _rows(tmp_path / "out" / "courses.csv")}
    for want in _rows(demo / "truth.csv"):
        if want["patient"] != "pt-14-00000":
            assert got[want["patient"]] == want


def test_a_bare_string_subject_is_read_as_its_reference(tmp_path: Path) -> None:
    """Second review, N9: the cohort groups a resource by a bare-string subject as the hook reads it."""
    import orjson

    from service.clinical.valuesets import value_sets
    from service.cohort.export import chunks, discover, read_chunk, read_codes
    from service.cohort.store import PartWriter, shard_patients

    export = tmp_path / "export"
    export.mkdir()
    lines = [
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "subject": "Patient/p",
            "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
            "effectiveDateTime": "2024-03-09T08:00:00Z",
            "valueQuantity": {"value": 40, "unit": "10*9/L"},
        },
    ]
    (export / "Observation.ndjson").write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    work = tmp_path / "work"
    work.mkdir()
    writer = PartWriter(work, 1)
    files, _ = discover(export)
    reports = [read_chunk(c, writer, read_codes(value_sets().lab_codes)) for f in files for c in chunks(f)]
    writer.commit()
    assert all(not r.problems for r in reports)
    assert [pid for pid, _ in shard_patients(work, 0)] == ["p"]


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 211, 4096])
def test_chunks_hold_every_line_once_whatever_the_boundaries(tmp_path: Path, monkeypatch, chunk_bytes: int) -> None:
    """A plain file's region is read at once and split: every line (blank, CRLF, longer than a chunk, the
    last one without a newline) belongs to exactly one chunk, in order, and the bytes add up."""
    import random

    from service.cohort.export import ChunkReport, _lines, chunks, discover

    rng = random.Random(chunk_bytes)
    lines = [b"x" * rng.choice((0, 1, 5, 90, 300)) + rng.choice((b"", b"\r")) for _ in range(120)]
    body = b"\n".join(lines)  # no final newline
    exp = tmp_path / "export"
    exp.mkdir()
    (exp / "Observation.ndjson").write_bytes(body)
    monkeypatch.setattr(export, "CHUNK_BYTES", chunk_bytes)
    (f,) = discover(exp)[0]
    got, total = [], 0
    for c in chunks(f):
        rep = ChunkReport(f.id, c.index)
        got += list(_lines(c, rep))
        total += rep.bytes
    assert [g.rstrip(b"\n") for g in got] == lines
    assert total == len(body)
    assert len(chunks(f)) == -(-len(body) // chunk_bytes)


def test_a_missing_patients_unread_observations_are_reported_at_their_lines(tmp_path: Path, monkeypatch) -> None:
    """Observations of codes no rule reads are kept as places only, one compact row per patient and chunk:
    when the patient is missing, each is still reported at its own line, across chunks."""
    import orjson

    def obs(i: int, code: str) -> bytes:
        return orjson.dumps(
            {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final",
                "subject": {"reference": "Patient/ghost"},
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "effectiveDateTime": "2024-03-09T08:00:00Z",
                "valueQuantity": {"value": 80, "unit": "/min"},
            }
        )

    exp = tmp_path / "export"
    exp.mkdir()
    codes = ["8867-4", "8867-4", "777-3", "8867-4"] * 10  # vital signs beside a platelet count
    (exp / "Observation.ndjson").write_bytes(b"\n".join(obs(i, k) for i, k in enumerate(codes)) + b"\n")
    (exp / "Patient.ndjson").write_bytes(b'{"resourceType":"Patient","id":"someone"}\n')
    monkeypatch.setattr(export, "CHUNK_BYTES", 2000)  # a few lines a chunk
    monkeypatch.setattr(export, "FLUSH_BYTES", 100)  # and flushed every line or two within it
    assert _run(exp, tmp_path / "out") == 0  # "someone" is a patient, without a course
    reported = [(p["file"], p["kind"], p["detail"]) for p in _rows(tmp_path / "out" / "problems.csv")]
    lines = [int(p["line"]) for p in _rows(tmp_path / "out" / "problems.csv") if p["kind"] == "missing-patient"]
    assert lines == list(range(1, len(codes) + 1))
    assert set(reported) == {("Observation.ndjson", "missing-patient", "Observation dropped")}
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["inputs"]["resourcesOfMissingPatients"] == len(codes)
    assert s["inputs"]["observationsOfCodesNoRuleReads"] == 30


def test_workers_are_forked_only_from_a_process_without_other_threads(demo: Path, tmp_path: Path, monkeypatch) -> None:
    """With no other thread the workers are forked (fast start); with one running (a test runner's, an
    embedding application's) they come from a forkserver. The answer is the same."""
    import multiprocessing
    import sys
    import threading

    from service.cohort import run as cohort_run

    methods: list[str] = []
    get_context = multiprocessing.get_context

    def spy(method: str) -> object:
        methods.append(method)
        return get_context(method)

    monkeypatch.setattr(cohort_run.multiprocessing, "get_context", spy)
    outs = []
    for threaded in (False, True):
        stop = threading.Event()
        other = threading.Thread(target=stop.wait, daemon=True)
        if threaded:
            other.start()
        try:
            out = tmp_path / f"out-{threaded}"
            assert _run(demo / "export", out, "--registry", str(demo / "registry.csv")) == 0
            outs.append(out)
        finally:
            stop.set()
            if threaded:
                other.join()
    unthreaded = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "forkserver"
    assert methods == [unthreaded, "forkserver"]
    for out in outs:
        for name in ("courses.csv", "problems.csv"):
            assert (out / name).read_bytes() == (demo / "out" / name).read_bytes()


def test_lines_that_are_not_json_are_flushed_like_any_other(tmp_path: Path, monkeypatch) -> None:
    """Review of 2026-12-02: a broken line that names its patient is kept as a row; those rows count
    towards the flush as well, so that a gzip file (one chunk) of them does not grow in memory."""
    from service.clinical.valuesets import value_sets
    from service.cohort.export import chunks, discover, read_chunk, read_codes
    from service.cohort.store import PartWriter, _batches, shard_patients

    exp = tmp_path / "export"
    exp.mkdir()
    with gzip.open(exp / "Observation.ndjson.gz", "wb") as f:
        for i in range(300):
            f.write(b'{"resourceType":"Observation","id":"o%d","subject":{"reference":"Patient/p1"},"valu\n' % i)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(export, "FLUSH_BYTES", 64 * 10)
    writer = PartWriter(work, 1)
    (f,) = discover(exp)[0]
    (c,) = chunks(f)
    rep = read_chunk(c, writer, read_codes(value_sets().lab_codes))
    assert [k for _, k, _ in rep.problems] == ["malformed-json"] * 300
    (part,) = work.glob("shard-*.pkl")
    batches = [len(b) for b in _batches(part)]
    assert max(batches) <= 10 and sum(batches) == 300
    ((pid, rows),) = list(shard_patients(work, 0))
    assert pid == "p1" and [r[4] for r in rows] == list(range(1, 301))


def _config_error(tmp_path: Path, monkeypatch, capsys, name: str, value: str) -> str:
    """The command's stderr with one setting from the environment; the exit status must be 2."""
    from service.web.settings import load_settings

    monkeypatch.setenv(name, value)
    load_settings.cache_clear()  # read once per process; this test's environment is its own
    exp = tmp_path / "export"
    exp.mkdir()
    (exp / "Patient.ndjson").write_bytes(b'{"resourceType":"Patient","id":"p"}\n')
    try:
        assert _run(exp, tmp_path / "out") == 2
    finally:
        monkeypatch.undo()
        load_settings.cache_clear()
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    return err


def test_a_site_configuration_that_cannot_be_used_is_said_at_start(tmp_path: Path, monkeypatch, capsys) -> None:
    """Review of 2026-12-02: an unknown value-set extension fails before any worker starts, with a message."""
    err = _config_error(tmp_path, monkeypatch, capsys, "HEMATOTOX_CLINICAL__EXTRA_LOINC", '{"no_such_group": ["1-1"]}')
    assert err.startswith("cohort: the site configuration cannot be used:") and "no_such_group" in err


def test_an_invalid_setting_is_named_without_its_value(tmp_path: Path, monkeypatch, capsys) -> None:
    """A configuration may hold secrets (a database URL with its password): the error names the setting."""
    err = _config_error(tmp_path, monkeypatch, capsys, "HEMATOTOX_CLINICAL__LOOKBACK_DAYS", "s3cret-not-a-number")
    assert err.startswith("cohort: the site configuration cannot be used: clinical.lookback_days:")
    assert "s3cret" not in err


def test_a_file_of_bad_lines_is_reported_line_by_line_without_holding_them(tmp_path: Path, monkeypatch) -> None:
    """Review of 2026-12-02 (pre-existing): a chunk's problems beyond PROBLEMS_HELD go to the reader's spill
    file and the main process streams them into its table, so a file of millions of bad lines (a gzip
    file is one chunk) is never in memory at once; every line is still reported, at its own number."""
    exp = tmp_path / "export"
    exp.mkdir()
    with gzip.open(exp / "Condition.ndjson.gz", "wb") as f:
        for i in range(1, 2501):
            f.write(b"\n" if i % 2 else b"[1]\n")
    (exp / "Patient.ndjson").write_bytes(b"\n" * 7 + b'{"resourceType":"Patient","id":"p"}\n')
    monkeypatch.setattr(export, "PROBLEMS_HELD", 100)
    monkeypatch.setattr(export, "CHUNK_BYTES", 4)  # the plain file in several chunks too
    assert _run(exp, tmp_path / "out") == 0
    got = [(p["file"], int(p["line"]), p["kind"]) for p in _rows(tmp_path / "out" / "problems.csv")]
    want = [("Condition.ndjson.gz", i, "blank-line" if i % 2 else "not-a-resource") for i in range(1, 2501)]
    want += [("Patient.ndjson", i, "blank-line") for i in range(1, 8)]
    assert got == want

    from service.clinical.valuesets import value_sets
    from service.cohort.store import PartWriter, spilled_problems

    work = tmp_path / "work"
    work.mkdir()
    gz = next(f for f in export.discover(exp)[0] if f.gz)
    (c,) = export.chunks(gz)
    rep = export.read_chunk(c, PartWriter(work, 1), export.read_codes(value_sets().lab_codes))
    spilled = [len(batch) for _, _, batch in spilled_problems(work)]
    assert len(rep.problems) <= 100 and max(spilled) <= 100 and len(rep.problems) + sum(spilled) == 2500
