#!/usr/bin/env python3
"""In-process cost of scoring one post-infusion course (clinical-spec §9), and how it grows.

    .venv/bin/python bench/course_cost.py [-n 300]

One course patient: a CAR-T infusion, a fludarabine administration on day −5, CRP and ferritin before
LD, and 100 days (day 0..99) of a daily CBC with differential, 10 Observations a draw (WBC, ANC,
neutrophil %, lymphocyte % and count, monocyte %, RBC, haematocrit, platelets, haemoglobin): about
1,000 Observations. One scoring = ``infusions`` + ``ld_start`` + ``course_result`` (live, today =
day 99) + the HT assessment at LD (``assess_patient`` with ``ld_trigger``), as the follow-up service
and the cohort run them. Prints p50/p99 over N scorings, wall clock and the thread's CPU time (target
p99 ≤ 20 ms), then the median CPU time at
250 … 4,000 results (more draws a day beyond 1,000) split into the course part and the HT part, with
the course's cost per result, which stays flat when the growth is linear.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from datetime import date, datetime, timedelta
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

from service.clinical.assessment import assess_patient
from service.clinical.course import course_for, course_result, infusions, ld_start, ld_trigger
from service.clinical.labs import LabRules
from service.clinical.valuesets import value_sets

TZ = ZoneInfo("Europe/Berlin")
VS = value_sets()
RULES = LabRules(tz=TZ)
DAY0 = date(2024, 3, 15)
PATIENT = "bench"
PANEL = (  # LOINC, unit, value for day d
    ("6690-2", "10*9/L", lambda d: 0.8 if d < 10 else 4.0),
    ("751-8", "10*9/L", lambda d: 0.3 if d < 10 else 2.0),
    ("770-8", "%", lambda d: 40 if d < 10 else 50),
    ("736-9", "%", lambda d: 30),
    ("731-0", "10*9/L", lambda d: 1.2),
    ("5905-5", "%", lambda d: 8),
    ("789-8", "10*12/L", lambda d: 3.5),
    ("4544-3", "%", lambda d: 30),
    ("777-3", "10*9/L", lambda d: 40 if d < 20 else 120),
    ("718-7", "g/dL", lambda d: 8.5),
)


def _at(day: int, hour: int, minute: int = 0) -> str:
    return datetime.combine(DAY0 + timedelta(days=day), clock(hour, minute), TZ).isoformat()


def _obs(oid: str, code: str, value: float, unit: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


def patient(results: int) -> list[dict[str, Any]]:
    """The course patient with ``results`` CBC Observations over days 0..99 (draws spread over the day)."""
    draws = max(1, results // len(PANEL))
    per_day = max(1, -(-draws // 100))
    out: list[dict[str, Any]] = [
        {
            "resourceType": "MedicationAdministration",
            "id": "cart",
            "status": "completed",
            "subject": {"reference": f"Patient/{PATIENT}"},
            "medicationCodeableConcept": {"text": "Yescarta"},
            "effectiveDateTime": _at(0, 10),
        },
        {
            "resourceType": "MedicationAdministration",
            "id": "flu",
            "status": "completed",
            "subject": {"reference": f"Patient/{PATIENT}"},
            "medicationCodeableConcept": {"text": "fludarabine"},
            "effectiveDateTime": _at(-5, 9),
        },
        _obs("crp", "1988-5", 12, "mg/L", _at(-6, 8)),
        _obs("fer", "2276-4", 900, "ng/mL", _at(-6, 8)),
        _obs("plt-ld", "777-3", 150, "10*9/L", _at(-6, 8)),
    ]
    for k in range(draws):
        day, slot = divmod(k, per_day) if per_day > 1 else (k % 100, k // 100)
        when = _at(day % 100, 6 + (slot * 17) // 60 % 12, (slot * 17) % 60)
        for code, unit, value in PANEL:
            out.append(_obs(f"{code}-{k}", code, value(day % 100), unit, when))
    return out


Timing = tuple[float, float, float, float]  # course wall, HT wall, course CPU, HT CPU (seconds)


def score(resources: list[dict[str, Any]], today: date) -> Timing:
    """One scoring, timed by wall clock and by the thread's CPU time, course part and HT part."""
    t, c = time.perf_counter(), time.thread_time()
    infs, _ = infusions(resources, PATIENT, VS, TZ)
    course = course_for(infs, today)
    assert course is not None
    ld = ld_start(course, resources, PATIENT, VS, TZ)
    result = course_result(resources, course, today, PATIENT, VS, RULES)
    t1, c1 = time.perf_counter(), time.thread_time()
    ht = assess_patient(ld_trigger(course, ld, VS), resources, PATIENT, VS, RULES)
    t2, c2 = time.perf_counter(), time.thread_time()
    assert result.measures.severe_neutropenia_days.min == 10 and ht.confirmed.group != "low"
    return t1 - t, t2 - t1, c1 - c, c2 - c1


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300, help="scorings per figure")
    args = ap.parse_args()
    gc.freeze()  # as the worker does after start-up (service/web/cli.py): modules out of the cyclic GC
    today = DAY0 + timedelta(days=99)

    res = patient(1000)
    n_obs = sum(1 for r in res if r["resourceType"] == "Observation")
    for _ in range(20):  # warm-up
        score(res, today)
    runs = [score(res, today) for _ in range(args.n)]
    walls = [(r[0] + r[1]) * 1000 for r in runs]
    cpus = [(r[2] + r[3]) * 1000 for r in runs]
    print(f"course patient, {n_obs} Observations, {args.n} scorings (infusions + ld_start + course_result + HT at LD):")
    print(f"  wall p50 {pct(walls, 0.5):.2f} ms   p99 {pct(walls, 0.99):.2f} ms   (target p99 ≤ 20 ms)")
    # On a shared machine the wall-clock tail is mostly other processes; the thread's CPU time is not.
    load = os.getloadavg()[0]
    print(f"  CPU  p50 {pct(cpus, 0.5):.2f} ms   p99 {pct(cpus, 0.99):.2f} ms   (load average {load:.1f})")
    print()
    print("Growth, CPU time p50 (ms):")
    print("| results | course | HT at LD | total | course µs / result |")
    print("|---:|---:|---:|---:|---:|")
    for n in (250, 500, 1000, 2000, 4000):
        res = patient(n)
        runs = [score(res, today) for _ in range(max(20, args.n // 5))]
        course_t = statistics.median(r[2] for r in runs) * 1000
        ht_t = statistics.median(r[3] for r in runs) * 1000
        tot_t = statistics.median(r[2] + r[3] for r in runs) * 1000
        print(f"| {n} | {course_t:.2f} | {ht_t:.2f} | {tot_t:.2f} | {course_t * 1000 / n:.1f} |")


if __name__ == "__main__":
    main()
