"""When further pages of a FHIR search cannot change the answer (the clinical side of early stop).

`cds_hooks.prefetch.resolve` asks `stop(key, resources_so_far)` whenever a search has a `next` link
left. The lab searches sort newest first (`_sort=-date`): once the oldest Observation seen so far is
older than the lookback before T0, every later page is older still and would be ignored by the
scoring (older than the lookback: never read). The ECOG search needs only the most recent recorded value.

A stop is only ever called when the results really are in the order the template asked for: a
server that ignored `_sort` says nothing about its later pages, so then all pages are read (and the
page cap applies, which fails the key rather than truncating it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, time, timedelta, tzinfo

from service.clinical.course import COURSE_DAYS
from service.clinical.labs import LabRules, parse_fhir_datetime
from service.clinical.nrm import ecog

# Margin on the lookback: facility calendar days, date-only values and offsets can shift a result's
# day by one either way; stopping a little later than necessary costs at most a page.
MARGIN_DAYS = 2

StopPaging = Callable[[str, Sequence[dict]], bool]


def sort_date(resource: object, tz: tzinfo) -> datetime | None:
    """The date an Observation search sorts by (`date` = effective[x]); None when it has none."""
    if not isinstance(resource, dict):
        return None
    raw = resource.get("effectiveDateTime") or resource.get("effectiveInstant")
    period = resource.get("effectivePeriod")
    if raw is None and isinstance(period, dict):
        raw = period.get("start") or period.get("end")
    parsed = parse_fhir_datetime(raw, tz) if isinstance(raw, str) else None
    return parsed[0] if parsed else None


def _newest_first(dates: list[datetime]) -> bool:
    return all(a >= b for a, b in itertools.pairwise(dates))


def lookback_stop(
    t0: datetime, rules: LabRules, patient_id: str, lab_keys: Iterable[str], ecog_key: str | None = "ecog"
) -> StopPaging:
    """stop(key, resources) for one hook: lab keys end past T0 − lookback, ECOG once it has a value."""
    try:
        cutoff: datetime | None = t0 - timedelta(days=rules.lookback_days + MARGIN_DAYS)
    except OverflowError:  # an LD start in year 1: nothing can be older, never stop
        cutoff = None
    labs = frozenset(lab_keys)

    def stop(key: str, resources: Sequence[dict]) -> bool:
        if key not in labs and key != ecog_key:
            return False
        dated = [d for r in resources if (d := sort_date(r, rules.tz)) is not None]
        if not dated or not _newest_first(dated):
            return False
        if key == ecog_key:
            # Newest first: a later page only holds older ECOGs, and the most recent one counts.
            try:
                return ecog(resources, patient_id) is not None
            except (TypeError, ValueError):  # odd data: read every page, let the scoring judge it
                return False
        return cutoff is not None and dated[-1] < cutoff

    return stop


def infusion_stop(today: date, tz: tzinfo, keys: Iterable[str]) -> StopPaging:
    """stop(key, resources) for the follow-up service's infusion search (newest first): once an
    administration from before day +100 of today's course could start is seen, later pages are older
    still and cannot hold the infusion of a course that contains today."""
    cutoff = datetime.combine(today - timedelta(days=COURSE_DAYS + MARGIN_DAYS), time(0), tz)
    wanted = frozenset(keys)

    def stop(key: str, resources: Sequence[dict]) -> bool:
        if key not in wanted:
            return False
        dated = [d for r in resources if (d := sort_date(r, tz)) is not None]
        return bool(dated) and _newest_first(dated) and dated[-1] < cutoff

    return stop
