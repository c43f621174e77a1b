"""FHIR Observations → one lab value per analyte, placed in time relative to LD start (T0).

Clinical-spec §1.5 (window, stale values), §1.6 (censored values, derived ANC), §5.1 (codes and
filters), §6 (units and plausibility). Input is plain Observation dicts as an EHR sends them;
nothing here trusts a field it has not checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from service.clinical.fhirjson import as_list, dicts
from service.clinical.hematotox import MAX_POINTS, Points, Span, points
from service.clinical.units import CANONICAL, PLAUSIBLE, UnitRejected, is_plausible, to_canonical
from service.clinical.valuesets import LOINC, LabCode, ValueSets

USABLE_STATUS = frozenset({"final", "amended", "corrected"})
COMPARATORS = frozenset({"<", "<=", ">", ">="})
_NOTHING: frozenset[str] = frozenset()

Problem = Literal["implausible", "unit", "status", "absent", "no-value", "no-time", "comparator"]
TimeClass = Literal["current", "stale", "old", "after"]
Status = Literal["current", "stale", "missing", "censored", "implausible"]


@dataclass(frozen=True)
class LabRules:
    tz: tzinfo
    window_days: int = 3
    lookback_days: int = 30
    accept_preliminary: bool = False
    inclusive_boundaries: bool = True
    # Site factors for units the spec leaves unusable by default, keyed "analyte:unit".
    configured_factors: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class LabResult:
    analyte: str
    tier: int
    value: Decimal | None  # canonical unit; the bound when censored
    comparator: str | None
    effective: datetime | None  # timezone-aware
    date_only: bool
    timing_imprecise: bool
    observation: str | None  # "Observation/<id>"
    problem: Problem | None = None
    specimen: str | None = None
    reference_high: Decimal | None = None
    interpretation: frozenset[str] = frozenset()
    derived_from: tuple[str, ...] = ()

    @property
    def unit(self) -> str:
        return CANONICAL[self.analyte]

    def span(self) -> Span:
        v = self.value
        assert v is not None
        lo, hi = PLAUSIBLE[self.analyte]
        match self.comparator:
            case None:
                return Span.point(v)
            case "<":
                return Span(lo, v, hi_closed=False)
            case "<=":
                return Span(lo, v)
            case ">":
                return Span(v, hi, lo_closed=False)
            case _:
                return Span(v, hi)


@dataclass(frozen=True)
class Component:
    analyte: str
    status: Status
    used: LabResult | None  # the result behind the status (current, or stale)
    # HT points; None for analytes that are not HT inputs (LDH, creatinine).
    confirmed: Points | None
    provisional: Points | None
    rejected_in_window: int = 0


# ---------------------------------------------------------------- parsing


# Clinical dates outside these years are data errors; rejecting them keeps every timezone
# conversion and "T0 − n days" inside what datetime can represent.
_SANE_YEARS = (1900, 2200)


def parse_fhir_datetime(text: object, tz: tzinfo) -> tuple[datetime, bool] | None:
    """FHIR dateTime → (aware datetime, date_only). Year or year-month only → None (too vague).

    A datetime without an offset (invalid FHIR, common in feeds) is read in the facility zone.
    """
    if not isinstance(text, str):
        return None
    if len(text) == 10:
        try:
            d = date.fromisoformat(text)
        except ValueError:
            return None
        if not _SANE_YEARS[0] <= d.year <= _SANE_YEARS[1]:
            return None
        return datetime.combine(d, time(0), tz), True
    if len(text) < 10:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    if not _SANE_YEARS[0] <= dt.year <= _SANE_YEARS[1]:
        return None  # year 1 or 9999 with an offset overflows on any conversion
    return dt, False


def _decimal(x: object) -> Decimal | None:
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        return None
    try:
        d = Decimal(str(x))
    except InvalidOperation:
        return None
    # "1e999999999" is a valid JSON number string but no lab value: beyond any unit factor it
    # would overflow the decimal context.
    return d if d.is_finite() and -30 <= d.adjusted() <= 30 else None


def _subject_ok(obs: dict[str, Any], patient_id: str) -> bool:
    subject = obs.get("subject")
    if subject is None:  # optional in R4; the query already selected the patient
        return True
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return isinstance(ref, str) and (ref == f"Patient/{patient_id}" or ref.endswith(f"/Patient/{patient_id}"))


def _effective(obs: dict[str, Any], tz: tzinfo) -> tuple[datetime, bool, bool] | None:
    """(when, date_only, imprecise) of specimen collection; `issued` only as a last resort."""
    raw = obs.get("effectiveDateTime") or obs.get("effectiveInstant")
    period = obs.get("effectivePeriod")
    if raw is None and isinstance(period, dict):
        raw = period.get("start") or period.get("end")
    imprecise = False
    if raw is None:
        raw, imprecise = obs.get("issued"), True
    parsed = parse_fhir_datetime(raw, tz) if raw is not None else None
    if parsed is None:
        return None
    when, date_only = parsed
    return when, date_only, imprecise or date_only


def parse_observation(obs: dict[str, Any], patient_id: str, vs: ValueSets, rules: LabRules) -> LabResult | None:
    """One Observation → a LabResult, or None when it is not one of our lab codes / patients."""
    head = _head(obs, patient_id, vs, rules)
    return None if head is None else _body(obs, *head, rules)


Effective = tuple[datetime, bool, bool]  # (when, date_only, imprecise), see _effective


def _head(obs: object, patient_id: str, vs: ValueSets, rules: LabRules) -> tuple[LabCode, Effective | None] | None:
    """What an Observation is and when it was collected, or None when it is not one of our lab codes /
    patients: enough to place it in time before its value is read."""
    if not isinstance(obs, dict) or obs.get("resourceType") != "Observation":
        return None
    code = obs.get("code")
    if not isinstance(code, dict):
        return None
    lab_codes = vs.lab_codes
    lab = None
    for c in as_list(code.get("coding")):  # the first LOINC coding that is one of our codes
        if isinstance(c, dict) and c.get("system") == LOINC:
            k = c.get("code")
            if isinstance(k, str) and k in lab_codes:
                lab = lab_codes[k]
                break
    if lab is None or not _subject_ok(obs, patient_id):
        return None
    return lab, _effective(obs, rules.tz)


def _body(obs: dict[str, Any], lab: LabCode, eff: Effective | None, rules: LabRules) -> LabResult:
    """The rest of parse_observation: status, value, unit, plausibility."""
    analyte = lab.analyte
    when, date_only, imprecise = eff if eff is not None else (None, False, False)
    oid = obs.get("id")
    ref = f"Observation/{oid}" if isinstance(oid, str) and oid else None
    spec = obs.get("specimen")
    specimen = spec.get("reference") if isinstance(spec, dict) else None
    if not isinstance(specimen, str):
        specimen = None

    # Membership only for strings: a client may send any JSON there, and a dict is not hashable.
    status = obs.get("status")
    if not isinstance(status, str) or not (
        status in USABLE_STATUS or (rules.accept_preliminary and status == "preliminary")
    ):
        problem: Problem | None = "status"
    elif obs.get("dataAbsentReason") is not None:
        problem = "absent"
    elif eff is None:
        problem = "no-time"
    else:
        problem = None
    q = obs.get("valueQuantity")
    if problem is None:
        raw_value = _decimal(q.get("value")) if isinstance(q, dict) else None
        if raw_value is None:
            problem = "no-value"
    if problem is not None:
        return LabResult(analyte, lab.tier, None, None, when, date_only, imprecise, ref, problem, specimen)
    assert isinstance(q, dict) and raw_value is not None  # for mypy: no problem means both were read
    comparator = q.get("comparator")
    if comparator is not None and not (isinstance(comparator, str) and comparator in COMPARATORS):
        return LabResult(analyte, lab.tier, None, None, when, date_only, imprecise, ref, "comparator", specimen)
    unit_text = q.get("code") if q.get("system") == "http://unitsofmeasure.org" and q.get("code") else q.get("unit")
    try:
        value = to_canonical(analyte, raw_value, unit_text, rules.configured_factors)
    except UnitRejected:
        # A UCUM code we cannot use may still come with a usable human unit string.
        try:
            value = to_canonical(analyte, raw_value, q.get("unit"), rules.configured_factors)
        except UnitRejected:
            return LabResult(analyte, lab.tier, None, None, when, date_only, imprecise, ref, "unit", specimen)
    if not is_plausible(analyte, value):
        return LabResult(analyte, lab.tier, value, comparator, when, date_only, imprecise, ref, "implausible", specimen)
    return LabResult(
        analyte,
        lab.tier,
        value,
        comparator,
        when,
        date_only,
        imprecise,
        ref,
        None,
        specimen,
        _reference_high(obs, analyte, rules),
        _interpretation(obs),
    )


def _reference_high(obs: dict[str, Any], analyte: str, rules: LabRules) -> Decimal | None:
    for rr in dicts(obs.get("referenceRange")):
        high = rr.get("high")
        if isinstance(high, dict) and (v := _decimal(high.get("value"))) is not None:
            unit = high.get("code") or high.get("unit")
            try:
                return to_canonical(analyte, v, unit, rules.configured_factors)
            except UnitRejected:
                return None
    return None


def _interpretation(obs: dict[str, Any]) -> frozenset[str]:
    raw = obs.get("interpretation")
    if not raw:
        return _NOTHING
    return frozenset(c["code"] for cc in dicts(raw) for c in dicts(cc.get("coding")) if isinstance(c.get("code"), str))


# ---------------------------------------------------------------- time


class _Clock:
    """Where a result stands against T0, in facility calendar days (spec §1.5), with T0's day and the
    window bounds worked out once per hook. T0 is never outside the years parse_fhir_datetime admits."""

    __slots__ = ("lookback_start", "rules", "t0", "t0_day", "window_start")

    def __init__(self, t0: datetime, rules: LabRules) -> None:
        self.t0, self.rules = t0, rules
        self.t0_day = t0.astimezone(rules.tz).date()
        self.window_start = self.t0_day - timedelta(days=rules.window_days)
        self.lookback_start = self.t0_day - timedelta(days=rules.lookback_days)

    def classify(self, effective: datetime, date_only: bool) -> TimeClass:
        day = effective.date() if date_only else effective.astimezone(self.rules.tz).date()
        if (day > self.t0_day) if date_only else (effective > self.t0):
            return "after"
        if day >= self.window_start:
            return "current"
        if day >= self.lookback_start:
            return "stale"
        return "old"


def eligible_window(t0: datetime, rules: LabRules) -> tuple[datetime, datetime]:
    """The eligible window of spec §1.5 rule 2 as two instants in the facility zone, with their
    offsets: from the start of the local calendar day T0 − window_days to T0 (what _Clock counts as
    "current"). The round trip through UTC moves a midnight that a DST change skips (America/Santiago,
    America/Havana) to the first local time of that day; a repeated midnight keeps its first instant."""
    first_day = t0.astimezone(rules.tz).date() - timedelta(days=rules.window_days)
    start = datetime.combine(first_day, time.min, rules.tz).astimezone(UTC).astimezone(rules.tz)
    return start, t0.astimezone(rules.tz)


# ---------------------------------------------------------------- derived ANC


def _when(r: LabResult) -> datetime:
    """The time of a usable result (derive_anc and _pick see only those)."""
    assert r.effective is not None
    return r.effective


def _value(r: LabResult) -> Decimal:
    """The value of a usable result (derive_anc sees only those)."""
    assert r.value is not None
    return r.value


def _same_specimen(a: LabResult, b: LabResult) -> bool:
    if a.specimen and b.specimen:
        return a.specimen == b.specimen
    return not a.date_only and not b.date_only and a.effective == b.effective


def _sum(parts: list[LabResult], analyte: str, tier: int) -> LabResult | None:
    """Sum absolute counts or percentages of one specimen; censored parts are not summed."""
    if any(p.comparator for p in parts):
        return None
    earliest = min(parts, key=_when)
    total = sum((_value(p) for p in parts), Decimal(0))
    return LabResult(
        analyte,
        tier,
        total,
        None,
        earliest.effective,
        any(p.date_only for p in parts),
        any(p.timing_imprecise for p in parts),
        parts[0].observation,
        _guard(analyte, total),
        parts[0].specimen,
        derived_from=tuple(p.observation for p in parts if p.observation),
    )


def _guard(analyte: str, value: Decimal) -> Problem | None:
    # A derived value passes the same plausibility guard as a reported one (spec §6.2): a WBC
    # mislabelled 10*3/uL for /uL must not become an ANC of 250 that scores 0 points.
    return None if is_plausible(analyte, value) else "implausible"


def derive_anc(results: list[LabResult]) -> list[LabResult]:
    """Extra ANC candidates: segs + bands (absolute), and WBC × neutrophil % (spec §1.6).

    Direct ANC stays tier 0; segs(+bands) is tier 1; WBC × % is tier 2 — used only when no
    better source exists in the same time category. Bands are added to a *segmented* %, never to a
    total neutrophil %, which already includes bands (CIBMTR): adding them there would raise the
    ANC and could hide a point.
    """
    ok = [r for r in results if r.problem is None and r.effective is not None]
    by = {
        a: [r for r in ok if r.analyte == a] for a in ("seg_abs", "band_abs", "wbc", "neut_pct", "seg_pct", "band_pct")
    }
    out: list[LabResult] = []
    for seg in by["seg_abs"]:
        bands = [b for b in by["band_abs"] if _same_specimen(seg, b)][:1]
        if (s := _sum([seg, *bands], "anc", 1)) is not None:
            out.append(s)
    pcts = list(by["neut_pct"])
    for seg in by["seg_pct"]:
        bands = [b for b in by["band_pct"] if _same_specimen(seg, b)][:1]
        if (s := _sum([seg, *bands], "neut_pct", 0)) is not None:
            pcts.append(s)
    for pct in pcts:
        if pct.comparator or pct.problem:
            continue
        for wbc in by["wbc"]:
            if not _same_specimen(wbc, pct):
                continue
            anc = _value(wbc) * _value(pct) / 100
            earliest = min((wbc, pct), key=_when)
            refs = tuple(dict.fromkeys(x for x in (wbc.observation, *pct.derived_from, pct.observation) if x))
            out.append(
                LabResult(
                    "anc",
                    2,
                    anc,
                    wbc.comparator,
                    earliest.effective,
                    wbc.date_only or pct.date_only,
                    wbc.timing_imprecise or pct.timing_imprecise,
                    wbc.observation,
                    _guard("anc", anc),
                    wbc.specimen,
                    derived_from=refs,
                )
            )
            break
    return out


# ---------------------------------------------------------------- selection


def _pick(cands: list[LabResult]) -> LabResult | None:
    """Best tier first, then the most recent (spec §1.5 rule 3: no averaging)."""
    if not cands:
        return None
    return min(cands, key=lambda r: (r.tier, -_when(r).timestamp()))


# Analytes that only serve to derive an ANC (derive_anc): their results are always read in full,
# whatever their date, because a derived value takes the earliest time of its parts.
_ANC_PARTS = frozenset({"seg_abs", "band_abs", "wbc", "neut_pct", "seg_pct", "band_pct"})


# A stale result not yet read: (sort key, Observation, its code, its time) or (key, None, None, a derived result).
_Stale = tuple[tuple[int, float], dict[str, Any] | None, LabCode | None, Effective | LabResult]


def assess_all(
    observations: Iterable[dict[str, Any]],
    patient_id: str,
    t0: datetime,
    vs: ValueSets,
    rules: LabRules,
    analytes: Iterable[str],
) -> dict[str, Component]:
    """Each analyte's component over all parseable observations (and the derived ANCs).

    An Observation's value is read only when it can matter: results without a collection time, after
    T0 or older than the lookback are skipped; a stale result is read only when the analyte has no
    usable current one, and then in order of preference (best tier, most recent) until the first
    usable one. ANC parts are always read (derive_anc needs all of them).
    """
    clock = _Clock(t0, rules)
    parts: list[LabResult] = []
    current: dict[str, list[LabResult]] = {}
    stale: dict[str, list[_Stale]] = {}
    for obs in observations:
        head = _head(obs, patient_id, vs, rules)
        if head is None:
            continue
        lab, eff = head
        if lab.analyte in _ANC_PARTS:
            parts.append(_body(obs, lab, eff, rules))
            continue
        if eff is None:
            continue
        tc = clock.classify(eff[0], eff[1])
        if tc == "current":
            current.setdefault(lab.analyte, []).append(_body(obs, lab, eff, rules))
        elif tc == "stale":
            stale.setdefault(lab.analyte, []).append(((lab.tier, -eff[0].timestamp()), obs, lab, eff))
    for r in derive_anc(parts):  # after the direct results
        if r.effective is None:
            continue
        tc = clock.classify(r.effective, r.date_only)
        if tc == "current":
            current.setdefault(r.analyte, []).append(r)
        elif tc == "stale":
            stale.setdefault(r.analyte, []).append(((r.tier, -r.effective.timestamp()), None, None, r))
    return {a: _assess(a, current.get(a, ()), stale.get(a, ()), rules) for a in analytes}


def _assess(analyte: str, current: Iterable[LabResult], stale: Iterable[_Stale], rules: LabRules) -> Component:
    """One analyte's component from its in-window results and its stale ones (not yet read): the best
    usable current result, else the best usable stale one (provisional only), else missing."""
    usable: list[LabResult] = []
    rejected = 0
    implausible = False
    for r in current:
        if r.problem is not None:
            rejected += 1
            implausible |= r.problem in ("implausible", "unit")
        else:
            usable.append(r)

    def pts(r: LabResult | None) -> Points | None:
        if analyte not in MAX_POINTS:
            return None
        return points(analyte, r.span() if r else None, rules.inclusive_boundaries)

    missing = pts(None)
    if (cur := _pick(usable)) is not None:
        p = pts(cur)
        return Component(analyte, "censored" if cur.comparator else "current", cur, p, p, rejected)
    # _pick(stale) = the first usable one in (tier, -timestamp) order; sorted() keeps ties in input order.
    for _, obs, lab, item in sorted(stale, key=lambda entry: entry[0]):
        if isinstance(item, LabResult):
            r = item
        else:
            assert obs is not None and lab is not None  # an Observation's entry carries both
            r = _body(obs, lab, item, rules)
        if r.problem is None:
            return Component(analyte, "stale", r, missing, pts(r), rejected)
    return Component(analyte, "implausible" if implausible else "missing", None, missing, missing, rejected)
