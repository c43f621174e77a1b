"""Every number of the cohort report, from the `courses.csv` rows (clinical-spec §10): Table 2 and
Fig. 1A–D analogues by HT group, what each analysis excluded and why, and the seed's figures beside.

Indeterminate HT, an `unknown` outcome, an interval day count or an undetermined phenotype is never
imputed: such a course is counted apart and left out of the analysis that needs the missing fact.
Statistics are scipy's (Fisher's exact, chi-square of independence, Mann–Whitney U, Spearman, least
squares, the quantile test's CI for a median); the ROC AUC is the Mann–Whitney U over n₊·n₋, the
identity that defines it, so its p-value is that test's.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from service.clinical.assessment import ruleset_version
from service.cohort import paper
from service.cohort.analyze import TRI_MEASURES
from service.cohort.config import CohortRules
from service.cohort.problems import KINDS

if TYPE_CHECKING:
    from service.cohort.run import CohortOptions

GROUPS = ("low", "high")
PHENOTYPES = ("quick", "intermittent", "aplastic")
SCORES = range(8)
Row = dict[str, str]


def _f(x: float | np.floating[Any] | None, digits: int = 6) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), digits)


def _pct(k: int, n: int) -> float | None:
    return round(100 * k / n, 1) if n else None


def _score(r: Row) -> int | None:
    return int(r["ht_min"]) if r["ht_min"] == r["ht_max"] else None


def _days(r: Row) -> int | None:
    lo, hi = r["severe_neutropenia_days_min"], r["severe_neutropenia_days_max"]
    return int(lo) if lo == hi else None


def table2_row(rows: list[Row], measure: str) -> dict[str, Any]:
    by: dict[str, Counter[str]] = {g: Counter(r[measure] for r in rows if r["ht_group"] == g) for g in GROUPS}
    cell: dict[str, dict[str, Any]] = {}
    for g in GROUPS:
        yes, no = by[g]["yes"], by[g]["no"]
        cell[g] = {"yes": yes, "known": yes + no, "pct": _pct(yes, yes + no), "unknown": by[g]["unknown"]}
    yes_all: int = cell["low"]["yes"] + cell["high"]["yes"]
    known_all: int = cell["low"]["known"] + cell["high"]["known"]
    out: dict[str, Any] = {
        "measure": measure,
        "low": cell["low"],
        "high": cell["high"],
        "all": {"yes": yes_all, "known": known_all, "pct": _pct(yes_all, known_all)},
        "htIndeterminate": sum(1 for r in rows if r["ht_group"] == "indeterminate"),
        "test": "Fisher's exact (two-sided)",
        "oddsRatio": None,
        "p": None,
    }
    if cell["low"]["known"] and cell["high"]["known"]:
        table = [
            [cell["high"]["yes"], cell["high"]["known"] - cell["high"]["yes"]],
            [cell["low"]["yes"], cell["low"]["known"] - cell["low"]["yes"]],
        ]
        res = stats.fisher_exact(table)
        out["oddsRatio"], out["p"] = _f(res.statistic), _f(res.pvalue)
    else:
        out["why"] = "a group has no course with a known answer"
    ref = paper.TABLE2[measure]
    out["label"] = ref[0]
    return out


def phenotype_table(rows: list[Row]) -> dict[str, Any]:
    counts = {g: Counter(r["phenotype"] for r in rows if r["ht_group"] == g) for g in GROUPS}
    out: dict[str, Any] = {"test": "chi-square of independence (3 × 2)", "chi2": None, "dof": None, "p": None}
    for g in GROUPS:
        n = sum(counts[g][p] for p in PHENOTYPES)
        out[g] = {p: {"n": counts[g][p], "pct": _pct(counts[g][p], n)} for p in PHENOTYPES} | {"n": n}
        out[g]["countedApart"] = {"unclassified": counts[g]["unclassified"], "undetermined": counts[g]["undetermined"]}
    table = np.array([[counts[g][p] for g in GROUPS] for p in PHENOTYPES])
    if (table.sum(axis=0) > 0).all() and (table.sum(axis=1) > 0).all():
        res = stats.chi2_contingency(table)
        out["chi2"], out["dof"], out["p"] = _f(res.statistic), int(res.dof), _f(res.pvalue)
    else:
        out["why"] = "a phenotype or a group has no course (the test needs every row and column)"
    return out


def fig1a(rows: list[Row]) -> dict[str, Any]:
    by_score: dict[str, dict[str, int]] = {str(s): dict.fromkeys((*PHENOTYPES, "unclassified"), 0) for s in SCORES}
    excluded = Counter[str]()
    for r in rows:
        s = _score(r)
        if s is None:
            excluded["htScoreNotExact"] += 1
        elif r["phenotype"] == "undetermined":
            excluded["phenotypeUndetermined"] += 1
        else:
            by_score[str(s)][r["phenotype"]] += 1
    return {"byScore": by_score, "n": sum(sum(v.values()) for v in by_score.values()), "excluded": dict(excluded)}


def _counts(x: list[int]) -> list[list[int]]:
    """[[value, how many], ...]: a distribution without its rows."""
    return [[v, n] for v, n in sorted(Counter(x).items())]


def _median_ci(x: list[int]) -> tuple[float | None, float | None, float | None]:
    if not x:
        return None, None, None
    med = float(np.median(x))
    if len(x) < 2:
        return med, None, None
    ci = stats.quantile_test(x, q=med, p=0.5).confidence_interval(0.95)
    return med, _f(ci.low), _f(ci.high)


def fig1b(rows: list[Row]) -> dict[str, Any]:
    excluded = Counter[str]()
    days: dict[str, list[int]] = {g: [] for g in GROUPS}
    for r in rows:
        d = _days(r)
        if r["ht_group"] not in GROUPS:
            excluded["htIndeterminate"] += 1
        elif d is None:
            excluded["daysNotExact"] += 1
        else:
            days[r["ht_group"]].append(d)
    out: dict[str, Any] = {"excluded": dict(excluded), "test": "Mann–Whitney U (two-sided)", "u": None, "p": None}
    for g in GROUPS:
        med, lo, hi = _median_ci(days[g])
        out[g] = {"n": len(days[g]), "median": med, "ci95": [lo, hi], "dayCounts": _counts(days[g])}
    if days["low"] and days["high"]:
        res = stats.mannwhitneyu(days["high"], days["low"], alternative="two-sided")
        out["u"], out["p"] = _f(res.statistic), _f(res.pvalue)
    else:
        out["why"] = "a group has no course with an exact day count"
    return out


def _pairs(rows: list[Row]) -> tuple[list[tuple[int, int]], Counter[str]]:
    excluded = Counter[str]()
    pairs = []
    for r in rows:
        s, d = _score(r), _days(r)
        if s is None:
            excluded["htScoreNotExact"] += 1
        elif d is None:
            excluded["daysNotExact"] += 1
        else:
            pairs.append((s, d))
    return sorted(pairs), excluded


def fig1c(rows: list[Row]) -> dict[str, Any]:
    pairs, excluded = _pairs(rows)
    # (score, days, courses): the scatter's points as counts, no row of its own
    points = [[s, d, n] for (s, d), n in sorted(Counter(pairs).items())]
    out: dict[str, Any] = {"n": len(pairs), "excluded": dict(excluded), "points": points}
    out |= {"spearmanR": None, "p": None, "slopeDaysPerPoint": None, "intercept": None}
    x = [p[0] for p in pairs]
    y = [p[1] for p in pairs]
    if len(pairs) >= 3 and len(set(x)) > 1 and len(set(y)) > 1:
        sp = stats.spearmanr(x, y)
        lr = stats.linregress(x, y)
        out |= {
            "spearmanR": _f(sp.statistic),
            "p": _f(sp.pvalue),
            "slopeDaysPerPoint": _f(lr.slope),
            "intercept": _f(lr.intercept),
            "slopeStderr": _f(lr.stderr),
        }
    else:
        out["why"] = "fewer than 3 courses, or no spread in the score or the days"
    return out


def fig1d(rows: list[Row]) -> dict[str, Any]:
    excluded = Counter[str]()
    pos: list[int] = []
    neg: list[int] = []
    tp = fn = tn = fp = 0
    for r in rows:
        outcome = r["severe_neutropenia_14"]
        if outcome == "unknown":
            excluded["outcomeUnknown"] += 1
            continue
        if r["ht_group"] in GROUPS:  # sensitivity / specificity need the group only
            high = r["ht_group"] == "high"
            if outcome == "yes":
                tp, fn = tp + high, fn + (not high)
            else:
                fp, tn = fp + high, tn + (not high)
        s = _score(r)
        if s is None:
            excluded["htScoreNotExact"] += 1
        else:
            (pos if outcome == "yes" else neg).append(s)
    out: dict[str, Any] = {
        "nPositive": len(pos),
        "nNegative": len(neg),
        "excluded": dict(excluded),
        "auc": None,
        "p": None,
        "atHt2": {
            "tp": tp,
            "fn": fn,
            "tn": tn,
            "fp": fp,
            "sensitivityPct": _pct(tp, tp + fn),
            "specificityPct": _pct(tn, tn + fp),
        },
        "roc": None,
    }
    if pos and neg:
        res = stats.mannwhitneyu(pos, neg, alternative="two-sided")
        out["auc"], out["p"] = _f(res.statistic / (len(pos) * len(neg))), _f(res.pvalue)
        p_arr, n_arr = np.array(pos), np.array(neg)
        thresholds = [*range(8, -1, -1)]  # "score ≥ t" from no one to everyone
        out["roc"] = {
            "thresholds": thresholds,
            "fpr": [_f(float((n_arr >= t).mean())) for t in thresholds],
            "tpr": [_f(float((p_arr >= t).mean())) for t in thresholds],
        }
    else:
        out["why"] = "no course with an outcome of yes, or none with no, and an exact score"
    return out


def _date_range(rows: list[Row]) -> dict[str, str | None]:
    day0 = sorted(r["day0"] for r in rows)
    ld = sorted(r["ld_start"][:10] for r in rows if r["ld_start"])
    last = [
        (date.fromisoformat(r["day0"]) + timedelta(days=int(r["follow_up_days"]))).isoformat()
        for r in rows
        if r["follow_up_days"]
    ]
    return {
        "firstLdStart": ld[0] if ld else None,
        "firstDay0": day0[0] if day0 else None,
        "lastDay0": day0[-1] if day0 else None,
        "lastResult": max(last) if last else None,
    }


def build_summary(
    rows: list[Row],
    rules: CohortRules,
    opts: CohortOptions,
    inputs: dict[str, Any],
    problem_counts: dict[str, int],
    problem_examples: dict[str, list[str]],
) -> dict[str, Any]:
    groups = Counter(r["ht_group"] for r in rows)
    return {
        "rulesetVersion": ruleset_version(rules.vs),
        "asOf": opts.as_of.isoformat(),
        "pseudonymized": opts.key is not None,
        "registry": opts.registry is not None,
        "dateRange": _date_range(rows),
        "inputs": inputs,
        "problems": {
            "counts": {k: problem_counts.get(k, 0) for k in KINDS},
            "examples": problem_examples,
            "list": "problems.csv",
        },
        "cohort": {
            "courses": len(rows),
            "live": sum(r["live"] == "yes" for r in rows),
            "laterCourses": sum("later-courses" in r["flags"].split("|") for r in rows),
            "htGroups": {g: groups[g] for g in ("low", "high", "indeterminate")},
            "htProvisionalGroups": dict(sorted(Counter(r["ht_provisional_group"] or "none" for r in rows).items())),
            "ldStartSource": dict(sorted(Counter(r["ld_start_source"] for r in rows).items())),
            "phenotypes": dict(sorted(Counter(r["phenotype"] for r in rows).items())),
            "diabetes": dict(sorted(Counter(r["diabetes"] for r in rows).items())),
            "elevatedFerritin": dict(sorted(Counter(r["elevated_ferritin"] for r in rows).items())),
        },
        "table2": {"rows": [table2_row(rows, m) for m in TRI_MEASURES], "phenotype": phenotype_table(rows)},
        "fig1a": fig1a(rows),
        "fig1b": fig1b(rows),
        "fig1c": fig1c(rows),
        "fig1d": fig1d(rows),
        "paper": paper.as_json(),
        "notes": [
            "Severe anemia is Hb < 8 g/dL from labs only; the paper also counts transfusion (not assessed).",
            "Indeterminate HT and unknown outcomes are counted apart, never imputed (clinical-spec §10).",
        ],
    }
