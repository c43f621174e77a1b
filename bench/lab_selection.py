"""In-process time of the lab selection (service/clinical/labs.py `assess_all`), the labs share of a hook.

The payloads are bench/payloads.py's (35, 200 and 1,000 Observations, newest draw 1 day before T0),
plus a tie-heavy one: every draw of the 35 reported twice at the same collection time with another
value and id, and an implausible ANC newer than every other. Prints the median and p99 of
`assess_all` per payload, in microseconds (no server, no HTTP: the selection alone).

    .venv/bin/python bench/lab_selection.py            # --rounds N (default 2000 calls per payload)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.payloads import PATIENT, T0, observations  # noqa: E402
from service.clinical.hematotox import HT_ANALYTES  # noqa: E402
from service.clinical.labs import LabRules, assess_all  # noqa: E402
from service.clinical.valuesets import value_sets  # noqa: E402
from tests.cases import obs  # noqa: E402

VS = value_sets()
RULES = LabRules(tz=ZoneInfo("UTC"))
ANALYTES = (*HT_ANALYTES, "ldh", "creatinine")


def tie_heavy() -> list[dict[str, Any]]:
    base = observations(35)
    twins = []
    for o in base:
        twin = {**o, "id": o["id"] + "-b", "valueQuantity": {**o["valueQuantity"]}}
        twin["valueQuantity"]["value"] = round(twin["valueQuantity"]["value"] * 0.9, 2)
        twins.append(twin)
    newest = (T0 - timedelta(hours=2)).isoformat()
    return [*base, *twins, obs("anc-bad", "751-8", 1200, "10*3/uL", newest, patient=PATIENT)]


def run(name: str, observations_: list[dict[str, Any]], rounds: int) -> None:
    for _ in range(50):  # warm the unit cache and the interpreter
        assess_all(observations_, PATIENT, T0, VS, RULES, ANALYTES)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        assess_all(observations_, PATIENT, T0, VS, RULES, ANALYTES)
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"{name:<28} {len(observations_):>5} obs   median {statistics.median(samples):8.1f} us   p99 {p99:8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = parser.parse_args().rounds
    for n in (35, 200, 1000):
        run(f"payloads.observations({n})", observations(n), rounds if n < 1000 else max(1, rounds // 5))
    run("tie-heavy (35 twice + bad)", tie_heavy(), rounds)


if __name__ == "__main__":
    main()
