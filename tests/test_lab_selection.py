"""Lab selection never depends on the order results arrive in, and never trusts a mislabelled newest value.

Clinical-spec §1.5 rule 3 (issue 10): results without a number are skipped; an untrusted number
(implausible, rejected unit) at least as recent as the result that would be used makes the analyte
missing; the better tier first, then the most recent; ties at one collection time score the pointwise
worst. Each example goes through HTTP in every order of its results; the properties shuffle every
prefetch Bundle (and the order of the keys) over the hostile-input and unit-variant generators.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.cases import BY_NAME, hook_request, obs, prefetch_for, searchset
from tests.test_hostile_input import COND_FIELDS, OBS_FIELDS, ORDER_FIELDS, _request, json_values
from tests.test_scoring_properties import ALT_UNITS, CODES, labs

SIGN = "/cds-services/hematotox-order-sign"
P = "p"
# Collection times against the cases' T0 (LD start), 2024-03-10T10:00:00+00:00.
TWO_H = "2024-03-10T08:00:00+00:00"  # T0 − 2 h
THIRTY_H = "2024-03-09T04:00:00+00:00"  # T0 − 30 h
FIFTY_H = "2024-03-08T08:00:00+00:00"  # T0 − 50 h
STALE = "2024-03-05T08:00:00+00:00"  # T0 − 5 days: older than the window, inside the lookback
STALER = "2024-03-03T08:00:00+00:00"

Json = dict[str, Any]


def defaults(*without: str) -> list[Json]:
    """T1's default labs (0 points each) without the analytes a test brings itself."""
    return [o for o in BY_NAME["T1"].observations(P) if o["id"].removeprefix(f"{P}-") not in without]


def post(client: TestClient, body: Json) -> Json:
    r = client.post(SIGN, json=body)
    assert r.status_code == 200, r.text
    out: Json = r.json()
    return out


def risk(client: TestClient, observations: list[Json]) -> tuple[Json, str]:
    """(the risk card's hematotox extension, its detail) for these labs, in this order."""
    card = post(client, hook_request("order-sign", P, observations))["cards"][0]
    return card["extension"]["hematotox-cds"]["hematotox"], card["detail"]


def component(ht: Json, analyte: str) -> Json:
    return next(c for c in ht["components"] if c["analyte"] == analyte)


def status_cell(detail: str, lab: str) -> str:
    """The last cell of a lab's row in the risk card's table."""
    row = next(line for line in detail.splitlines() if line.startswith(f"| {lab} |"))
    return row.rstrip(" |").rsplit("|", 1)[-1]


def every_order(
    client: TestClient, base: list[Json], varying: Sequence[Json], check: Callable[[Json, str], None]
) -> None:
    """`check` holds for every permutation of `varying` (both orders of two, all six of three), placed
    before and after the other labs; the extension is the same in every order."""
    seen = []
    for perm in itertools.permutations(varying):
        for observations in ([*perm, *base], [*base, *perm]):
            ht, text = risk(client, copy.deepcopy(observations))
            check(ht, text)
            seen.append(ht)
    assert all(ht == seen[0] for ht in seen)


# ---------------------------------------------------------------- 1. ties at one collection time


def test_two_platelet_counts_at_one_time_score_the_worst(client: TestClient) -> None:
    def check(ht: Json, _: str) -> None:
        assert (ht["confirmed"]["min"], ht["confirmed"]["max"], ht["confirmed"]["group"]) == (2, 2, "high")
        plt = component(ht, "platelets")
        assert plt["value"] == 60 and plt["points"] == {"min": 2, "max": 2}
        assert plt["observation"] == "Observation/plt-60" and plt["tiedWith"] == ["Observation/plt-200"]
        assert "tie:platelets" in ht["flags"]

    varying = [
        obs("plt-60", "777-3", 60, "10*9/L", TWO_H, patient=P),
        obs("plt-200", "777-3", 200, "10*9/L", TWO_H, patient=P),
    ]
    every_order(client, defaults("plt"), varying, check)


def test_three_way_tie_with_a_censored_count_is_the_pointwise_worst(client: TestClient) -> None:
    """PLT 100, ">50" and 200 at T0 − 2 h (two codes of one tier): [max of mins 1, max of maxes 2]."""

    def check(ht: Json, _: str) -> None:
        plt = component(ht, "platelets")
        assert plt["points"] == {"min": 1, "max": 2}
        assert (ht["confirmed"]["min"], ht["confirmed"]["max"], ht["confirmed"]["group"]) == (1, 2, "indeterminate")
        # The result carrying the most points is shown; the others are named.
        assert (plt["value"], plt["comparator"], plt["status"]) == (50, ">", "censored")
        assert plt["tiedWith"] == ["Observation/plt-100", "Observation/plt-200"]

    varying = [
        obs("plt-100", "777-3", 100, "10*9/L", TWO_H, patient=P),
        obs("plt-gt50", "26515-7", 50, "10*9/L", TWO_H, comparator=">", patient=P),
        obs("plt-200", "778-1", 200000, "/uL", TWO_H, patient=P),
    ]
    every_order(client, defaults("plt"), varying, check)


def test_equal_values_show_the_smallest_observation_id(client: TestClient) -> None:
    def check(ht: Json, _: str) -> None:
        crp = component(ht, "crp")
        assert (crp["value"], crp["observation"], crp["points"]) == (4, "Observation/crp-a", {"min": 1, "max": 1})
        assert crp["tiedWith"] == ["Observation/crp-b", "Observation/crp-c"]

    varying = [
        obs(f"crp-{x}", "1988-5", v, u, TWO_H, patient=P)
        for x, v, u in (("c", 4.0, "mg/dL"), ("a", 40, "mg/L"), ("b", 4, "mg/dL"))
    ]
    every_order(client, defaults("crp"), varying, check)


def test_the_highest_ferritin_of_a_tie_is_shown_and_scored(client: TestClient) -> None:
    def check(ht: Json, _: str) -> None:
        fer = component(ht, "ferritin")
        assert (fer["value"], fer["points"]) == (2500, {"min": 2, "max": 2})
        assert ht["confirmed"]["group"] == "high"

    varying = [
        obs("fer-1", "2276-4", 600, "ng/mL", TWO_H, patient=P),
        obs("fer-2", "20567-4", 2500, "ug/L", TWO_H, patient=P),
    ]
    every_order(client, defaults("fer"), varying, check)


# ---------------------------------------------------------------- 2. the WBC of a derived ANC


def _differential(*wbcs: float, specimen: str | None = None) -> list[Json]:
    out = [obs(f"wbc-{w}", "6690-2", w, "10*9/L", TWO_H, patient=P) for w in wbcs]
    out.append(obs("neut", "770-8", 50, "%", TWO_H, patient=P))
    if specimen:
        for o in out:
            o["specimen"] = {"reference": specimen}
    return out


@pytest.mark.parametrize("specimen", [None, "Specimen/s1"])
def test_the_wbc_giving_the_lowest_anc_is_used(client: TestClient, specimen: str | None) -> None:
    """WBC 2.0 and 4.0 of one specimen × 50 %: ANC 1.0 (1 point) with Hb 9.0 (1 point) is HIGH; the
    other WBC would give ANC 2.0 and LOW."""
    base = [*defaults("anc", "hb"), obs("hb", "718-7", 9.0, "g/dL", patient=P)]

    def check(ht: Json, _: str) -> None:
        anc = component(ht, "anc")
        assert (anc["value"], anc["points"], anc["observation"]) == (1, {"min": 1, "max": 1}, "Observation/wbc-2.0")
        assert anc["derivedFrom"] == ["Observation/wbc-2.0", "Observation/neut"]
        assert ht["confirmed"]["group"] == "high"

    every_order(client, base, _differential(2.0, 4.0, specimen=specimen), check)


def test_three_wbc_results_of_one_specimen_in_every_order(client: TestClient) -> None:
    base = [*defaults("anc", "hb"), obs("hb", "718-7", 9.0, "g/dL", patient=P)]

    def check(ht: Json, _: str) -> None:
        anc = component(ht, "anc")
        assert (anc["value"], anc["observation"]) == (1.1, "Observation/wbc-2.2")
        assert anc["tiedWith"] == ["Observation/wbc-3.0", "Observation/wbc-4.0"]
        assert ht["confirmed"]["group"] == "high"

    wbcs = _differential(4.0, 2.2, 3.0)
    every_order(client, [*base, wbcs[-1]], wbcs[:-1], check)


def test_two_band_results_of_one_specimen_add_the_lowest(client: TestClient) -> None:
    """Segs 1.0 + bands 0.1 or 0.3 (two band codes, one specimen): ANC 1.1 scores, 1.3 would not."""
    base = [*defaults("anc", "hb"), obs("hb", "718-7", 9.0, "g/dL", patient=P)]
    base.append(obs("segs", "30451-9", 1.0, "10*9/L", TWO_H, patient=P))

    def check(ht: Json, _: str) -> None:
        anc = component(ht, "anc")
        assert (anc["value"], anc["points"]) == (1.1, {"min": 1, "max": 1})
        assert anc["derivedFrom"] == ["Observation/segs", "Observation/band-1"]

    varying = [
        obs("band-1", "26507-4", 0.1, "10*9/L", TWO_H, patient=P),
        obs("band-3", "30229-9", 0.3, "10*9/L", TWO_H, patient=P),
    ]
    every_order(client, base, varying, check)


# ---------------------------------------------------------------- 3. a mislabelled newest value


def test_an_implausible_newest_anc_makes_anc_missing(client: TestClient) -> None:
    """ANC "1200 10*3/uL" at T0 − 2 h, ANC 3.0 at T0 − 30 h, ferritin 700: not LOW [1,1] from the
    older value but ANC missing [0,1] → [1,2] indeterminate, and the card names the result to repeat."""
    base = [*defaults("anc", "fer"), obs("fer", "2276-4", 700, "ng/mL", patient=P)]

    def check(ht: Json, text: str) -> None:
        assert (ht["confirmed"]["min"], ht["confirmed"]["max"], ht["confirmed"]["group"]) == (1, 2, "indeterminate")
        anc = component(ht, "anc")
        assert anc == {
            "analyte": "anc",
            "status": "implausible",
            "points": {"min": 0, "max": 1},
            "unit": "10*9/L",
            "untrusted": "Observation/anc-new",
            "untrustedEffective": TWO_H,
        }
        assert "untrusted:anc" in ht["flags"] and ht["confirmed"]["couldChangeGroup"] == ["anc"]
        row = status_cell(text, "ANC")
        assert "repeat" in row and "Observation/anc-new" in row and "2024-03-10 08:00" in row

    varying = [
        obs("anc-new", "751-8", 1200, "10*3/uL", TWO_H, patient=P),
        obs("anc-old", "751-8", 3.0, "10*9/L", THIRTY_H, patient=P),
    ]
    every_order(client, base, varying, check)


def test_untrusted_values_of_any_code_and_tier_block_in_every_order(client: TestClient) -> None:
    """A direct ANC at T0 − 30 h; at T0 − 2 h a segs count with a rejected unit (another tier, the
    newest); a third ANC, older: the analyte is missing in all six orders."""

    def check(ht: Json, _: str) -> None:
        anc = component(ht, "anc")
        assert anc["status"] == "implausible" and anc["untrusted"] == "Observation/segs-bad"

    varying = [
        obs("anc-30h", "751-8", 3.0, "10*9/L", THIRTY_H, patient=P),
        obs("segs-bad", "30451-9", 0.9, "10*6/uL", TWO_H, patient=P),
        obs("anc-50h", "753-4", 2900, "/uL", FIFTY_H, patient=P),
    ]
    every_order(client, defaults("anc"), varying, check)


def test_an_untrusted_value_at_the_same_time_blocks_too(client: TestClient) -> None:
    """ "At least as recent": ANC 3.0 and a WBC × % of the same draw whose WBC is mislabelled."""

    def check(ht: Json, _: str) -> None:
        anc = component(ht, "anc")
        assert anc["status"] == "implausible" and anc["untrusted"] == "Observation/wbc-bad"

    varying = [
        obs("anc", "751-8", 3.0, "10*9/L", TWO_H, patient=P),
        obs("wbc-bad", "6690-2", 6000, "10*3/uL", TWO_H, patient=P),
        obs("neut", "770-8", 50, "%", TWO_H, patient=P),
    ]
    every_order(client, defaults("anc"), varying, check)


def test_an_older_untrusted_value_does_not_block(client: TestClient) -> None:
    def check(ht: Json, _: str) -> None:
        anc = component(ht, "anc")
        assert (anc["status"], anc["value"], anc["observation"]) == ("current", 3, "Observation/anc-new")
        assert "untrusted" not in anc and "untrusted:anc" not in ht.get("flags", [])

    varying = [
        obs("anc-new", "751-8", 3.0, "10*9/L", TWO_H, patient=P),
        obs("anc-bad", "751-8", 1200, "10*3/uL", THIRTY_H, patient=P),
    ]
    every_order(client, defaults("anc"), varying, check)


@pytest.mark.parametrize(("day", "blocks"), [("2024-03-10", True), ("2024-03-09", False)])
def test_a_date_only_untrusted_value_counts_from_its_days_end(client: TestClient, day: str, blocks: bool) -> None:
    """An implausible ANC known only by its date may have been drawn after ANC 3.0 of 08:00 that day."""

    def check(ht: Json, _: str) -> None:
        anc = component(ht, "anc")
        assert (anc["status"], anc.get("untrusted")) == (
            ("implausible", "Observation/anc-day") if blocks else ("current", None)
        )

    varying = [
        obs("anc", "751-8", 3.0, "10*9/L", TWO_H, patient=P),
        obs("anc-day", "751-8", 1200, "10*3/uL", day, patient=P),
    ]
    every_order(client, defaults("anc"), varying, check)


@pytest.mark.parametrize(
    "newest",
    [
        {"dataAbsentReason": {"text": "haemolysed"}},
        {"valueString": "<5"},
        {"valueCodeableConcept": {"text": "see comment"}},
        {"valueQuantity": {"unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}},
        {"status": "preliminary"},
    ],
    ids=["dataAbsentReason", "valueString", "valueCodeableConcept", "no-number", "preliminary"],
)
def test_a_newest_result_without_a_value_is_still_skipped(client: TestClient, newest: Json) -> None:
    """Step 1: no number, no result: the older CRP 4.0 mg/dL is used."""

    def check(ht: Json, _: str) -> None:
        crp = component(ht, "crp")
        assert (crp["status"], crp["value"], crp["points"]) == ("current", 4, {"min": 1, "max": 1})
        assert "untrusted" not in crp

    blank = obs("crp-new", "1988-5", 0, "mg/dL", TWO_H, patient=P)
    del blank["valueQuantity"]
    blank.update(newest)
    if "dataAbsentReason" in newest:
        blank["valueQuantity"] = {"value": 0.1, "unit": "mg/dL"}  # a number beside it is still no value
    every_order(client, defaults("crp"), [blank, obs("crp-old", "1988-5", 4.0, "mg/dL", THIRTY_H, patient=P)], check)


@pytest.mark.parametrize(
    "bad",
    [
        obs("crp-bad", "76485-2", 300, "nmol/L", TWO_H, patient=P),  # molar CRP, no configured factor
        obs("crp-bad", "1988-5", 3, "mg/ml", TWO_H, patient=P),  # an unknown unit string
        obs("crp-bad", "30522-7", 5, None, TWO_H, patient=P),  # no unit, fallback tier
        obs("crp-bad", "1988-5", 5, "mg/dL", TWO_H, comparator="~", patient=P),  # no FHIR comparator
    ],
    ids=["molar", "unknown-unit", "no-unit", "bad-comparator"],
)
def test_a_rejected_unit_is_untrusted(client: TestClient, bad: Json) -> None:
    def check(ht: Json, _: str) -> None:
        crp = component(ht, "crp")
        assert (crp["status"], crp["untrusted"], crp["points"]) == (
            "implausible",
            "Observation/crp-bad",
            {"min": 0, "max": 1},
        )

    every_order(client, defaults("crp"), [bad, obs("crp-old", "1988-5", 0.5, "mg/dL", THIRTY_H, patient=P)], check)


def test_the_stale_window_is_chosen_on_its_own(client: TestClient) -> None:
    """Current window: only an untrusted ANC. Stale window: ANC 0.8 → the provisional score uses it;
    the component is stale and still names the untrusted result to repeat."""

    def check(ht: Json, text: str) -> None:
        anc = component(ht, "anc")
        assert (anc["status"], anc["value"], anc["untrusted"]) == ("stale", 0.8, "Observation/anc-bad")
        assert ht["provisional"]["min"] == 1 and ht["confirmed"]["max"] == 1
        row = status_cell(text, "ANC")
        assert "implausible" in row and "repeat" in row and "Observation/anc-bad" in row

    varying = [
        obs("anc-bad", "751-8", 900, "10*3/uL", TWO_H, patient=P),
        obs("anc-stale", "751-8", 0.8, "10*9/L", STALE, patient=P),
    ]
    every_order(client, defaults("anc"), varying, check)


def test_an_untrusted_stale_value_blocks_the_provisional_score(client: TestClient) -> None:
    def check(ht: Json, _: str) -> None:
        plt = component(ht, "platelets")
        assert (plt["status"], plt["untrusted"]) == ("implausible", "Observation/plt-bad")
        assert "provisional" not in ht and (ht["confirmed"]["min"], ht["confirmed"]["max"]) == (0, 2)

    varying = [
        obs("plt-bad", "777-3", 60000, "10*9/L", STALE, patient=P),
        obs("plt-old", "777-3", 250, "10*9/L", STALER, patient=P),
    ]
    every_order(client, defaults("plt"), varying, check)


def test_a_date_only_untrusted_stale_value_of_the_same_day_blocks(client: TestClient) -> None:
    def check(ht: Json, _: str) -> None:
        anc = component(ht, "anc")
        assert (anc["status"], anc["untrusted"]) == ("implausible", "Observation/anc-day")
        assert "provisional" not in ht

    varying = [
        obs("anc-stale", "751-8", 0.8, "10*9/L", STALE, patient=P),
        obs("anc-day", "751-8", 1200, "10*3/uL", STALE[:10], patient=P),
    ]
    every_order(client, defaults("anc"), varying, check)


def test_stale_ties_score_the_worst(client: TestClient) -> None:
    def check(ht: Json, _: str) -> None:
        plt = component(ht, "platelets")
        assert (plt["status"], plt["value"]) == ("stale", 60)
        assert (ht["provisional"]["min"], ht["provisional"]["group"]) == (2, "high")

    varying = [
        obs("plt-60", "777-3", 60, "10*9/L", STALE, patient=P),
        obs("plt-200", "777-3", 200, "10*9/L", STALE, patient=P),
        obs("plt-300", "777-3", 300, "10*9/L", STALER, patient=P),
    ]
    every_order(client, defaults("plt"), varying, check)


# ---------------------------------------------------------------- 4. code tiers


def test_the_better_tier_first_then_recency(client: TestClient) -> None:
    """Hb 12.0 (718-7, primary) at T0 − 30 h; Hb 8.5 by oximetry (fallback) at T0 − 2 h: the primary."""

    def check(ht: Json, _: str) -> None:
        hb = component(ht, "hemoglobin")
        assert (hb["value"], hb["observation"], ht["confirmed"]["group"]) == (12, "Observation/hb-lab", "low")

    varying = [
        obs("hb-lab", "718-7", 12.0, "g/dL", THIRTY_H, patient=P),
        obs("hb-oxi", "55782-7", 8.5, "g/dL", TWO_H, patient=P),
    ]
    every_order(client, defaults("hb"), varying, check)


def test_ties_within_the_better_tier_only(client: TestClient) -> None:
    """Two primary Hb codes at T0 − 30 h (9.0 and 12.0) tie; the fallback 8.0, newer, is another tier."""

    def check(ht: Json, _: str) -> None:
        hb = component(ht, "hemoglobin")
        assert (hb["value"], hb["points"], hb["tiedWith"]) == (9, {"min": 1, "max": 1}, ["Observation/hb-12"])

    varying = [
        obs("hb-12", "718-7", 12.0, "g/dL", THIRTY_H, patient=P),
        obs("hb-9", "20509-6", 90, "g/L", THIRTY_H, patient=P),
        obs("hb-oxi", "55782-7", 8.0, "g/dL", TWO_H, patient=P),
    ]
    every_order(client, defaults("hb"), varying, check)


def test_a_direct_anc_before_a_newer_derived_one(client: TestClient) -> None:
    def check(ht: Json, _: str) -> None:
        anc = component(ht, "anc")
        assert (anc["value"], anc["observation"]) == (3, "Observation/anc")

    varying = [
        obs("anc", "751-8", 3.0, "10*9/L", THIRTY_H, patient=P),
        obs("wbc", "6690-2", 2.0, "10*9/L", TWO_H, patient=P),
        obs("neut", "770-8", 50, "%", TWO_H, patient=P),
    ]
    every_order(client, defaults("anc"), varying, check)


# ---------------------------------------------------------------- shuffled prefetch (hypothesis)


def json_number(value: object) -> bool:
    """False for what JSON has no text for (the hostile generator also makes infinite floats)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def shuffled(body: Json, rnd: random.Random) -> Json:
    """The same request with the entries of every prefetch Bundle, and the prefetch keys, reordered."""
    out = copy.deepcopy(body)
    pre = out["prefetch"]
    for value in pre.values():
        if isinstance(value, dict) and isinstance(value.get("entry"), list):
            rnd.shuffle(value["entry"])
    keys = list(pre)
    rnd.shuffle(keys)
    out["prefetch"] = {k: pre[k] for k in keys}
    return out


def answer(client: TestClient, body: Json) -> list[tuple[Any, ...]]:
    """What must not move: every card's summary, detail and extension (uuids are fresh each time)."""
    return [(c["summary"], c.get("detail"), c.get("extension")) for c in post(client, body)["cards"]]


def assert_order_free(client: TestClient, body: Json, rnd: random.Random) -> list[tuple[Any, ...]]:
    first = answer(client, body)
    assert answer(client, shuffled(body, rnd)) == first
    return first


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(OBS_FIELDS),
    json_values,
    st.sampled_from(ORDER_FIELDS),
    json_values,
    st.sampled_from(COND_FIELDS),
    json_values,
    st.randoms(use_true_random=False),
)
def test_shuffling_never_changes_the_answer_on_hostile_input(
    client: TestClient, of: str, ov: object, rf: str, rv: object, cf: str, cv: object, rnd: random.Random
) -> None:
    """The hostile-input generator's request (T19, one field of every Observation replaced by any
    JSON), with T1's defaults beside each result at the same time: every bundle has ties to break."""
    body = _request(of, ov, rf, rv, cf, cv)
    assume(all(json_number(v) for v in (ov, rv, cv)))  # what JSON cannot carry never reaches HTTP
    twins = [{**o, "id": f"twin-{o['id']}"} for o in defaults()]
    for key, bundle in prefetch_for(twins, P).items():
        if key not in ("patient", "conditions", "ecog"):
            body["prefetch"][key]["entry"] += bundle["entry"]
    assert_order_free(client, body, rnd)


TIMES = [TWO_H, THIRTY_H, STALE, STALER]
# Codes of each analyte by tier, and a unit that makes a value untrusted (implausible or rejected).
MORE_CODES = {
    "anc": ["751-8", "753-4", "26499-4"],
    "hemoglobin": ["718-7", "20509-6", "55782-7"],
    "platelets": ["777-3", "26515-7", "778-1"],
    "crp": ["1988-5", "30522-7", "76485-2"],
    "ferritin": ["2276-4", "20567-4", "24373-3"],
}
BAD_UNITS = {"anc": "10*6/uL", "hemoglobin": "mg/L", "platelets": "10*12/L", "crp": "nmol/L", "ferritin": "pmol/L"}

draw = st.tuples(
    labs,
    st.sampled_from(TIMES),
    st.fixed_dictionaries({a: st.sampled_from(["canonical", "alternative", "untrusted"]) for a in CODES}),
    st.fixed_dictionaries({a: st.integers(0, 2) for a in CODES}),
    st.sampled_from([None, "<", ">", ">="]),
)


# One draw: values by analyte (None: not drawn), collection time, unit kind and code index by analyte,
# and a comparator (used on the second draw only).
Draw = tuple[dict[str, Decimal | None], str, dict[str, str], dict[str, int], str | None]


def _draw_observations(i: int, d: Draw) -> list[Json]:
    values, when, unit_kind, code_index, comparator = d
    out = []
    for a, v in values.items():
        if v is None:
            continue
        code, unit = CODES[a]
        code = MORE_CODES[a][code_index[a]]
        if unit_kind[a] == "alternative":
            unit, mult = ALT_UNITS[a]
            v = v * mult
        elif unit_kind[a] == "untrusted":
            unit = BAD_UNITS[a]
        # Few ids on purpose: equal ids from different results must not make the answer order-bound.
        out.append(
            obs(f"{a}-{i % 2}", code, float(v), unit, when, comparator=comparator if i == 1 else None, patient=P)
        )
    return out


# The other bundles of the prefetch: Conditions (diabetes or not) and ECOG scores, a few at one time.
condition = st.builds(
    lambda i, code: {
        "resourceType": "Condition",
        "id": f"c{i}",
        "subject": {"reference": f"Patient/{P}"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]},
    },
    st.integers(0, 5),
    st.sampled_from(["E11.9", "E10.9", "R73.03", "I10"]),
)
ecog = st.builds(
    lambda i, value, when: obs(f"ecog{i}", "89247-1", 0, None, when, patient=P) | {"valueInteger": value},
    st.integers(0, 5),
    st.integers(0, 5),
    st.sampled_from([TWO_H, THIRTY_H]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(draw, min_size=1, max_size=4),
    st.lists(condition, max_size=3),
    st.lists(ecog, max_size=3),
    st.randoms(use_true_random=False),
)
def test_shuffling_never_changes_the_answer_on_unit_variants(
    client: TestClient, draws: list[Draw], conditions: list[Json], ecogs: list[Json], rnd: random.Random
) -> None:
    """The unit-variant generator (test_scoring_properties: values, alternative units), several draws at
    a few collection times (ties, stale, every tier), some with an untrusted unit or a comparator; and a
    few Conditions and ECOG scores in their bundles."""
    observations = [o for i, d in enumerate(draws) for o in _draw_observations(i, d)]
    body = hook_request("order-sign", P, observations)
    body["prefetch"]["conditions"] = searchset(conditions)
    body["prefetch"]["ecog"] = searchset(ecogs)
    assert assert_order_free(client, body, rnd), "LD orders: cards"


def test_an_id_that_is_no_fhir_id_stays_out_of_the_card_text(client: TestClient) -> None:
    """The extension names any id the client sent; the markdown only a well-formed one."""
    bad = obs("x|**y**", "751-8", 1200, "10*3/uL", TWO_H, patient=P)
    ht, text = risk(client, [*defaults("anc"), bad])
    assert component(ht, "anc")["untrusted"] == "Observation/x|**y**"
    row = status_cell(text, "ANC")
    assert "**y**" not in text and "repeat 2024-03-10 08:00" in row


# ---------------------------------------------------------------- censored parts of a derived ANC (review finding 1)

_OLDER_PAIR = [
    obs("wbc-old", "6690-2", 4.0, "10*9/L", FIFTY_H, patient=P),
    obs("pct-old", "770-8", 60, "%", FIFTY_H, patient=P),
]


@pytest.mark.parametrize(
    ("newest", "older", "shown", "points"),
    [
        # segs "<0.1" beside older segs 3.0: "<0.1", never the older 3.0
        (
            [obs("segs", "30451-9", 0.1, "10*9/L", TWO_H, comparator="<", patient=P)],
            [obs("segs-old", "30451-9", 3.0, "10*9/L", FIFTY_H, patient=P)],
            ("<", 0.1),
            [1, 1],
        ),
        # WBC 2.0 x "<5 %" -> "<0.1"
        (
            [
                obs("wbc", "6690-2", 2.0, "10*9/L", TWO_H, patient=P),
                obs("pct", "770-8", 5, "%", TWO_H, comparator="<", patient=P),
            ],
            _OLDER_PAIR,
            ("<", 0.1),
            [1, 1],
        ),
        # WBC 2.0 x (segs 40 % + bands "<1 %") -> "<0.82"
        (
            [
                obs("wbc", "6690-2", 2.0, "10*9/L", TWO_H, patient=P),
                obs("seg", "769-0", 40, "%", TWO_H, patient=P),
                obs("band", "764-1", 1, "%", TWO_H, comparator="<", patient=P),
            ],
            _OLDER_PAIR,
            ("<", 0.82),
            [1, 1],
        ),
        # WBC "<=2.0" x "<=50 %" -> "<=1.0"
        (
            [
                obs("wbc", "6690-2", 2.0, "10*9/L", TWO_H, comparator="<=", patient=P),
                obs("pct", "770-8", 50, "%", TWO_H, comparator="<=", patient=P),
            ],
            _OLDER_PAIR,
            ("<=", 1.0),
            [1, 1],
        ),
        # WBC ">3.0" x ">50 %" -> ">1.5": 0 points, sound
        (
            [
                obs("wbc", "6690-2", 3.0, "10*9/L", TWO_H, comparator=">", patient=P),
                obs("pct", "770-8", 50, "%", TWO_H, comparator=">", patient=P),
            ],
            _OLDER_PAIR,
            (">", 1.5),
            [0, 0],
        ),
        # mixed directions: WBC ">2.0" x "<5 %" says nothing -> untrusted, blocks the older 2.4
        (
            [
                obs("wbc", "6690-2", 2.0, "10*9/L", TWO_H, comparator=">", patient=P),
                obs("pct", "770-8", 5, "%", TWO_H, comparator="<", patient=P),
            ],
            _OLDER_PAIR,
            None,
            [0, 1],
        ),
    ],
    ids=["segs-censored", "pct-censored", "band-pct-censored", "both-upper", "both-lower", "mixed"],
)
def test_a_censored_part_of_a_derived_anc_is_never_dropped(
    client: TestClient, newest: list[Json], older: list[Json], shown: tuple[str, float] | None, points: list[int]
) -> None:
    def check(ht: Json, text: str) -> None:
        anc = component(ht, "anc")
        assert [anc["points"]["min"], anc["points"]["max"]] == points
        if shown is None:
            assert anc["status"] == "implausible" and "value" not in anc and anc["untrusted"]
        else:
            assert (anc["comparator"], anc["value"]) == shown
        assert "old" not in anc.get("observation", "")

    every_order(client, [*defaults("anc"), *older], newest, check)


# ---------------------------------------------------------------- unreadable collection times (review finding 4)


@pytest.mark.parametrize("when", ["20240309080000", "2024-03-09T08:00:00 CET", "09/03/2024"])
def test_an_unreadable_collection_time_falls_back_to_issued(client: TestClient, when: str) -> None:
    """PLT 40 with an unreadable effectiveDateTime and issued T0 − 22 h: it is the newest, 2 points."""
    plt = obs("plt-40", "777-3", 40, "10*9/L", when, patient=P)
    plt["issued"] = "2024-03-09T12:00:00Z"

    def check(ht: Json, _: str) -> None:
        c = component(ht, "platelets")
        assert (c["value"], c["points"]) == (40, {"min": 2, "max": 2})
        assert "timing-imprecise:platelets" in ht["flags"]

    every_order(client, defaults("plt"), [plt, obs("plt-250", "777-3", 250, "10*9/L", FIFTY_H, patient=P)], check)


def test_a_value_without_any_readable_time_blocks_and_is_named(client: TestClient) -> None:
    plt = obs("plt-40", "777-3", 40, "10*9/L", "09/03/2024", patient=P)

    def check(ht: Json, text: str) -> None:
        c = component(ht, "platelets")
        assert c["status"] == "untimed" and c["untrusted"] == "Observation/plt-40"
        assert c["points"] == {"min": 0, "max": 2} and ht["confirmed"]["group"] != "low"
        assert "collection time) skipped: platelets" in text
        assert "correct Observation/plt-40" in status_cell(text, "PLT")

    every_order(client, defaults("plt"), [plt, obs("plt-250", "777-3", 250, "10*9/L", FIFTY_H, patient=P)], check)


# ---------------------------------------------------------------- date-only results (review finding 6)


def test_a_date_only_result_ties_with_the_newest_timed_result_of_its_day(client: TestClient) -> None:
    """PLT 60 dated 2024-03-09 and PLT 200 at 2024-03-09 04:00: either may be the newer, [2, 2]."""

    def check(ht: Json, _: str) -> None:
        plt = component(ht, "platelets")
        assert plt["points"] == {"min": 2, "max": 2} and plt["observation"] == "Observation/plt-60"
        assert plt["tiedWith"] == ["Observation/plt-200"]

    varying = [
        obs("plt-60", "777-3", 60, "10*9/L", "2024-03-09", patient=P),
        obs("plt-200", "777-3", 200, "10*9/L", THIRTY_H, patient=P),
    ]
    every_order(client, defaults("plt"), varying, check)


def test_a_date_only_result_of_t0s_day_never_replaces_a_worse_one(client: TestClient) -> None:
    """T0 2024-03-10 10:00; PLT 200 dated 2024-03-10 (possibly after LD) beside PLT 60 of 03-09: [2, 2];
    a worse one of T0's day still adds its points (PLT 60 dated 03-10 beside PLT 200 of 03-09)."""

    def worse_kept(ht: Json, _: str) -> None:
        plt = component(ht, "platelets")
        assert plt["points"] == {"min": 2, "max": 2} and plt["observation"] == "Observation/plt-60"

    every_order(
        client,
        defaults("plt"),
        [
            obs("plt-60", "777-3", 60, "10*9/L", THIRTY_H, patient=P),
            obs("plt-200", "777-3", 200, "10*9/L", "2024-03-10", patient=P),
        ],
        worse_kept,
    )
    every_order(
        client,
        defaults("plt"),
        [
            obs("plt-60", "777-3", 60, "10*9/L", "2024-03-10", patient=P),
            obs("plt-200", "777-3", 200, "10*9/L", THIRTY_H, patient=P),
        ],
        worse_kept,
    )


# ---------------------------------------------------------------- a subject that cannot be read (review finding 10(d))

UNREADABLE_SUBJECTS = {
    "a string that is no reference": "Jane Doe",
    "display only": {"display": "Jane Doe"},
    "identifier only": {"identifier": {"system": "urn:mrn", "value": "123"}},
    "urn:uuid": {"reference": "urn:uuid:5b0a3e34-8b2b-4c6b-9f4a-0f2c5a6b7c8d"},
    "a group": {"reference": "Group/ward-7"},
    "a trailing newline": {"reference": "Patient/p\n"},
    "no reference form": {"reference": "Patient/xPatient/p"},
    "a query": {"reference": "Patient/p?_format=json"},
    "a fragment": {"reference": "https://x/fhir/Patient/p#x"},
    "a zero-width space": {"reference": "Patient/p\u200b"},
    "a number": {"reference": 7},
}


@pytest.mark.parametrize("subject", UNREADABLE_SUBJECTS.values(), ids=list(UNREADABLE_SUBJECTS))
def test_a_newest_anc_whose_subject_cannot_be_read_blocks_the_older_one(client: TestClient, subject: object) -> None:
    """It came in this patient's search but may not be theirs: never dropped in silence (an older normal
    value would then decide), untrusted instead, and the card says what to correct."""
    base = [*defaults("anc", "fer"), obs("fer", "2276-4", 700, "ng/mL", patient=P)]
    newest = obs("anc-new", "751-8", 0.3, "10*9/L", TWO_H, patient=P) | {"subject": subject}

    def check(ht: Json, text: str) -> None:
        anc = component(ht, "anc")
        assert anc["status"] == "implausible" and anc["untrusted"] == "Observation/anc-new"
        assert ht["confirmed"]["group"] != "low"
        assert "unreadable patient" in status_cell(text, "ANC")
        assert "- 1 result names no readable patient: not scored" in text

    every_order(client, base, [newest, obs("anc-old", "751-8", 3.0, "10*9/L", THIRTY_H, patient=P)], check)


@pytest.mark.parametrize(
    "subject",
    [
        {"reference": "Patient/p/_history/3"},
        {"reference": "https://ehr.example/fhir/Patient/p"},
        {"reference": "https://ehr.example/fhir/Patient/p/_history/1"},
        "Patient/p",  # a bare string where a Reference belongs: read as its reference
    ],
)
def test_this_patients_reference_in_any_form_is_read(client: TestClient, subject: object) -> None:
    newest = obs("anc-new", "751-8", 0.3, "10*9/L", TWO_H, patient=P) | {"subject": subject}
    ht, _ = risk(client, [*defaults("anc"), newest])
    anc = component(ht, "anc")
    assert anc["status"] == "current" and anc["observation"] == "Observation/anc-new"


@pytest.mark.parametrize("subject", [{"reference": "Patient/q"}, "Patient/q", {"reference": "https://x/Patient/q"}])
def test_another_patients_result_is_dropped(client: TestClient, subject: object) -> None:
    other = obs("anc-new", "751-8", 0.3, "10*9/L", TWO_H, patient=P) | {"subject": subject}
    ht, _ = risk(client, [*defaults("anc"), other, obs("anc-old", "751-8", 3.0, "10*9/L", THIRTY_H, patient=P)])
    anc = component(ht, "anc")
    assert anc["status"] == "current" and anc["observation"] == "Observation/anc-old" and "untrusted" not in anc


def test_a_withdrawn_result_with_an_unreadable_subject_does_not_block(client: TestClient) -> None:
    """No result anyway (entered-in-error): it keeps that problem, and the older value is used."""
    withdrawn = obs("anc-new", "751-8", 0.3, "10*9/L", TWO_H, patient=P, status="entered-in-error")
    withdrawn["subject"] = {"display": "Jane Doe"}
    ht, _ = risk(client, [*defaults("anc"), withdrawn, obs("anc-old", "751-8", 3.0, "10*9/L", THIRTY_H, patient=P)])
    assert component(ht, "anc")["observation"] == "Observation/anc-old"


@pytest.mark.parametrize("patient", ["p_1", "p:1", "p" * 70])
def test_a_patient_id_outside_the_fhir_id_grammar_still_scores(patient: str) -> None:
    """Review of 2cf864d, F1: context.patientId is compared as given; its LD orders are not another patient's."""
    from fastapi.testclient import TestClient as Client

    from service.web.app import create_app
    from tests.conftest import dev_settings

    observations = BY_NAME["T21"].observations(patient)
    with Client(create_app(dev_settings())) as c:
        r = c.post(SIGN, json=hook_request("order-sign", patient, observations))
    assert r.status_code == 200 and len(r.json()["cards"]) == 2
    ht = r.json()["cards"][0]["extension"]["hematotox-cds"]["hematotox"]
    assert ht["confirmed"]["group"] == "high"
    assert not any("untrusted" in f for f in ht.get("flags", []))


def test_a_stale_row_keeps_older_not_counted_beside_an_unreadable_newer_result(client: TestClient) -> None:
    """Second review, N6."""
    newer = obs("plt-new", "777-3", 40, "10*9/L", TWO_H, patient=P) | {"subject": {"display": "Jane Doe"}}
    old = obs("plt-old", "777-3", 250, "10*9/L", STALE, patient=P)
    _, text = risk(client, [*defaults("plt"), newer, old])
    cell = status_cell(text, "PLT")
    assert "older: not counted" in cell and "unreadable patient" in cell


def test_the_date_caches_never_change_an_answer() -> None:
    """parse_fhir_datetime and local_day are memoised (a CBC's results share a time): equal instants in
    other offsets get their own facility day, a date-only value its own date, and a long string is
    refused without being kept."""
    from zoneinfo import ZoneInfo

    from service.clinical import labs

    berlin, tokyo = ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Tokyo")
    utc = labs.parse_fhir_datetime("2024-03-09T23:30:00+00:00", berlin)
    same = labs.parse_fhir_datetime("2024-03-10T00:30:00+01:00", berlin)
    assert utc is not None and same is not None and utc[0] == same[0]
    assert labs.local_day(utc[0], False, berlin) == labs.local_day(same[0], False, berlin) == date(2024, 3, 10)
    assert labs.local_day(utc[0], False, UTC) == date(2024, 3, 9)
    assert labs.local_day(utc[0], False, tokyo) == date(2024, 3, 10)
    day_only = labs.parse_fhir_datetime("2024-03-09", tokyo)
    assert day_only is not None and labs.local_day(day_only[0], True, berlin) == date(2024, 3, 9)
    before = labs._parse_cached.cache_info().currsize
    junk = "2024-03-09T08:00:00+00:00" + " " * 10_000
    assert labs.parse_fhir_datetime(junk, berlin) is None
    assert labs._parse_cached.cache_info().currsize == before


def test_the_day_cache_tells_equal_datetimes_apart_when_their_days_differ() -> None:
    """Review of 2026-12-02: equal, equal-hashing datetimes may be different days: date-only values built in
    two zones (the same instant), and the two readings of a repeated hour (equal under one tzinfo)."""
    from zoneinfo import ZoneInfo

    from service.clinical import labs

    a = labs.parse_fhir_datetime("2024-03-10", ZoneInfo("Etc/GMT-14"))
    b = labs.parse_fhir_datetime("2024-03-09", ZoneInfo("Etc/GMT+10"))
    assert a is not None and b is not None and a[0] == b[0]
    berlin = ZoneInfo("Europe/Berlin")
    assert (labs.local_day(a[0], True, berlin), labs.local_day(b[0], True, berlin)) == (
        date(2024, 3, 10),
        date(2024, 3, 9),
    )
    ny, minus6 = ZoneInfo("America/New_York"), ZoneInfo("Etc/GMT+6")
    first, second = (datetime(2024, 11, 3, 1, 30, tzinfo=ny, fold=f) for f in (0, 1))
    assert first == second and hash(first) == hash(second)
    assert labs.local_day(first, False, minus6) == date(2024, 11, 2)
    assert labs.local_day(second, False, minus6) == date(2024, 11, 3)


@pytest.mark.parametrize("first", [0.0, -0.0, 1, 1.0, "1.50"])
def test_the_value_cache_never_changes_an_answer(first: object) -> None:
    """Lab numbers are memoised: equal keys that read differently (1 and 1.0, 0.0 and -0.0) are each read as
    written whichever came first, and a long string is read without being kept."""
    from service.clinical import labs

    labs._decimal(first)
    written = [(0.0, "0.0"), (-0.0, "-0.0"), (1, "1"), (1.0, "1.0"), ("1.50", "1.50"), ("1.5", "1.5")]
    assert [(raw, str(labs._decimal(raw))) for raw, _ in written] == written
    before = labs._decimal_cached.cache_info().currsize
    long = "1." + "0" * 40
    assert labs._decimal(long) == 1 and labs._decimal_cached.cache_info().currsize == before


def test_a_derived_anc_is_timed_the_same_whatever_order_its_parts_came_in() -> None:
    """Review of 2026-12-02: parts of one specimen at equal instants written with other offsets (and one timed
    by `issued` only) gave the derived ANC the time, and the timing flag, of whichever part came first."""
    from service.clinical.labs import LabRules, derive_anc, parse_observation
    from service.clinical.valuesets import value_sets

    def part(oid: str, code: str, value: float, unit: str, when: dict[str, str]) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/p1"},
            "specimen": {"reference": "Specimen/1"},
            "valueQuantity": {"value": value, "unit": unit},
        } | when

    observations = [
        part("a", "6690-2", 1.0, "10*9/L", {"effectiveDateTime": "2026-05-27T09:00:00+01:00"}),
        part("b", "6690-2", 5.0, "10*9/L", {"effectiveDateTime": "2026-05-27T07:00:00-01:00"}),
        part("p1", "770-8", 50, "%", {"effectiveDateTime": "2026-05-27T08:00:00+00:00"}),
        part("p2", "770-8", 50, "%", {"issued": "2026-05-27T09:00:00+00:00"}),
    ]
    results = [parse_observation(o, "p1", value_sets(), LabRules(tz=UTC)) for o in observations]
    assert all(r is not None for r in results)

    def shown(rs: Sequence[Any]) -> list[tuple[object, ...]]:
        return sorted(
            (str(r.value), r.effective.isoformat(), r.date_only, r.timing_imprecise, r.derived_from)
            for r in derive_anc(list(rs))
        )

    answers = {tuple(shown(p)) for p in itertools.permutations(results)}
    assert len(answers) == 1
