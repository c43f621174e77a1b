"""Paging of the FHIR fallback: the page cap fails a key, and the early stop ends paging that cannot matter.

The protocol layer (`resolve(stop_paging=...)`) knows nothing about dates; the service layer
(`service.web.paging.lookback_stop`) knows the lookback before T0 and that only the newest ECOG counts.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
import respx

from cds_hooks.fhir_client import FhirClient
from cds_hooks.prefetch import KeyState, PrefetchUnavailable, resolve
from service.clinical.labs import LabRules
from service.web.paging import MARGIN_DAYS, lookback_stop, sort_date
from tests.fake_fhir import FakeFhir

BASE = "https://ehr.test/fhir"
T0 = datetime(2024, 3, 10, 10, 0, tzinfo=UTC)
RULES = LabRules(tz=UTC, lookback_days=30)
TEMPLATES = {"hb": "Observation?patient={{context.patientId}}&code=http://loinc.org|718-7&_sort=-date&_count=2"}
CONTEXT = {"patientId": "p1"}


def hb(i: int, days_before: float, *, patient: str = "p1", date: str | None = None) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"hb{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": date or (T0 - timedelta(days=days_before)).isoformat(),
        "valueQuantity": {"value": 12, "unit": "g/dL"},
    }


def run(server: FakeFhir, *, stop=None, max_pages: int = 10, prefetch: dict | None = None):
    async def go():
        async with FhirClient() as client:
            return await resolve(
                TEMPLATES,
                CONTEXT,
                prefetch,
                client,
                BASE,
                None,
                time.monotonic() + 5,
                max_pages=max_pages,
                stop_paging=stop,
            )

    with respx.mock(base_url=BASE, assert_all_called=False, assert_all_mocked=True) as router:
        router.route().mock(side_effect=server)
        return asyncio.run(go())


# ------------------------------------------------------------------------------ protocol layer


def test_without_a_stop_every_page_is_read():
    server = FakeFhir(BASE, [hb(i, i * 5) for i in range(9)])
    resolved = run(server)
    assert len(resolved["hb"]) == 9 and resolved.meta["hb"].pages == 5 and not resolved.meta["hb"].stopped


def test_page_cap_fails_the_key_instead_of_returning_part_of_it():
    server = FakeFhir(BASE, [hb(i, i) for i in range(9)])
    with pytest.raises(PrefetchUnavailable) as info:
        run(server, max_pages=4)
    assert info.value.failures["hb"].code == "incomplete"
    assert info.value.meta["hb"].source == "fhir"


def test_stop_is_asked_with_the_key_and_everything_so_far_and_ends_paging():
    server = FakeFhir(BASE, [hb(i, i) for i in range(9)])
    calls = []

    def stop(key, resources):
        calls.append((key, [r["id"] for r in resources]))
        return len(resources) >= 4

    resolved = run(server, stop=stop)
    assert [r["id"] for r in resolved["hb"]] == ["hb0", "hb1", "hb2", "hb3"]
    assert calls == [("hb", ["hb0", "hb1"]), ("hb", ["hb0", "hb1", "hb2", "hb3"])]
    assert resolved.meta["hb"].pages == 2 and resolved.meta["hb"].stopped
    assert len(server.requests) == 2


def test_stop_is_asked_before_the_page_cap():
    server = FakeFhir(BASE, [hb(i, i) for i in range(9)])
    resolved = run(server, max_pages=2, stop=lambda key, resources: len(resources) >= 4)
    assert len(resolved["hb"]) == 4


def test_stop_is_not_asked_when_there_is_no_next_link():
    server = FakeFhir(BASE, [hb(0, 1)])
    resolved = run(server, stop=lambda key, resources: pytest.fail("asked without a next link"))
    assert len(resolved["hb"]) == 1 and not resolved.meta["hb"].stopped


def test_paginated_prefetch_is_not_continued_when_its_first_page_is_enough():
    server = FakeFhir(BASE, [hb(i, i) for i in range(9)])
    first = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": hb(0, 1)}, {"resource": hb(1, 40)}],
        "link": [{"relation": "next", "url": f"{BASE}/Observation?patient=p1&_offset=2"}],
    }
    resolved = run(server, prefetch={"hb": first}, stop=lambda key, resources: len(resources) >= 2)
    assert [r["id"] for r in resolved["hb"]] == ["hb0", "hb1"] and resolved.meta["hb"].stopped
    assert resolved.meta["hb"].state is KeyState.PAGINATED and server.requests == []


def test_paginated_prefetch_continuation_sees_the_first_page_too():
    server = FakeFhir(BASE, [hb(i, i) for i in range(9)])
    first = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": hb(0, 0)}, {"resource": hb(1, 1)}],
        "link": [
            {
                "relation": "next",
                "url": f"{BASE}/Observation?patient=p1&code=http://loinc.org|718-7&_sort=-date&_count=2&_offset=2",
            }
        ],
    }
    seen = []
    resolved = run(
        server, prefetch={"hb": first}, stop=lambda key, resources: seen.append(len(resources)) or len(resources) >= 6
    )
    assert [r["id"] for r in resolved["hb"]] == [f"hb{i}" for i in range(6)]
    assert seen == [2, 4, 6] and resolved.meta["hb"].pages == 2


# ------------------------------------------------------------------------------ service layer


STOP = lookback_stop(T0, RULES, "p1", ["hemoglobin", "platelets"])
CUTOFF_DAYS = RULES.lookback_days + MARGIN_DAYS


def test_lookback_stop_only_past_the_lookback_with_margin():
    assert not STOP("hemoglobin", [hb(0, 1), hb(1, CUTOFF_DAYS - 0.5)])
    assert STOP("hemoglobin", [hb(0, 1), hb(1, CUTOFF_DAYS + 0.5)])
    assert not STOP("hemoglobin", [])


def test_lookback_stop_never_for_unsorted_results_or_other_keys():
    unsorted = [hb(0, 40), hb(1, 1), hb(2, 50)]  # the server ignored _sort: later pages may be recent
    assert not STOP("hemoglobin", unsorted)
    assert not STOP("conditions", [hb(0, 1), hb(1, 90)])
    assert not STOP("crp", [hb(0, 1), hb(1, 90)])  # not among the keys given


def test_lookback_stop_ignores_undated_and_reads_date_only_and_periods():
    undated = {**hb(9, 0), "effectiveDateTime": None}
    assert STOP("hemoglobin", [hb(0, 1), undated, hb(1, 90)])
    assert STOP("hemoglobin", [hb(0, 1, date="2023-12-01")])
    period = {**hb(2, 0), "effectiveDateTime": None, "effectivePeriod": {"start": "2023-01-01T00:00:00Z"}}
    assert sort_date(period, UTC) == datetime(2023, 1, 1, tzinfo=UTC)
    assert STOP("platelets", [period])


def test_ecog_stops_once_a_recorded_value_is_there():
    def ecog(i, days, value=None):
        o = {
            "resourceType": "Observation",
            "id": f"e{i}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "89247-1"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": (T0 - timedelta(days=days)).isoformat(),
        }
        if value is not None:
            o["valueInteger"] = value
        return o

    assert not STOP("ecog", [ecog(0, 1), ecog(1, 2)])  # no usable value yet
    assert STOP("ecog", [ecog(0, 1), ecog(1, 2, value=1)])
    assert not STOP("ecog", [ecog(1, 5, value=1), ecog(0, 1)])  # not newest first
