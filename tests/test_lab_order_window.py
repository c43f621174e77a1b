"""The one-click lab orders ask for the window the score counts (clinical-spec §1.5 rule 2): from the
start of the facility's calendar day T0 − 3 days, with that moment's offset, to T0 — across DST
changes and in a zone whose midnight a DST change skips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from service.web.app import create_app
from tests.cases import BY_NAME, hook_request, ld_orders, obs
from tests.conftest import dev_settings

SIGN = "/cds-services/hematotox-order-sign"
PLATELETS = "777-3"


def lab_orders(client: TestClient, t0: str | None, platelets: list[dict] | None = None) -> tuple[list[dict], dict]:
    """(the ServiceRequests of the risk card, its platelet component) for a hook whose platelets are
    `platelets` (none: missing, so the HT group stays open and labs are offered)."""
    labs = [o for o in BY_NAME["T1"].observations("p") if o["code"]["coding"][0]["code"] != PLATELETS]
    r = client.post(SIGN, json=hook_request("order-sign", "p", labs + (platelets or []), orders=ld_orders("p", t0)))
    assert r.status_code == 200, r.text
    risk = r.json()["cards"][0]
    requests = [
        a["resource"]
        for s in risk.get("suggestions") or []
        for a in s["actions"]
        if a["resource"]["resourceType"] == "ServiceRequest"
    ]
    (component,) = [
        c for c in risk["extension"]["hematotox-cds"]["hematotox"]["components"] if c["analyte"] == "platelets"
    ]
    return requests, component


@pytest.fixture(scope="module", params=["America/New_York", "America/Santiago", "Europe/Berlin"])
def zone(request):
    with TestClient(create_app(dev_settings(service={"timezone": request.param}))) as c:
        yield request.param, c


# zone -> (T0, the expected start of the window). New York: T0 in summer time, the window's first day
# (Saturday 2024-03-09) still in winter time. Santiago: 2024-09-08 has no midnight (00:00 -04 → 01:00
# -03). Berlin: the window's first day begins in summer time, T0 after the change back to winter time.
CASES = {
    "America/New_York": ("2024-03-12T10:00:00-04:00", "2024-03-09T00:00:00-05:00"),
    "America/Santiago": ("2024-09-11T08:30:00-03:00", "2024-09-08T01:00:00-03:00"),
    "Europe/Berlin": ("2024-10-29T09:00:00+01:00", "2024-10-26T00:00:00+02:00"),
}


def test_lab_orders_ask_for_the_scores_window_in_the_facility_zone(zone):
    name, client = zone
    t0, start = CASES[name]
    requests, component = lab_orders(client, t0)
    assert component["status"] == "missing" and requests
    for sr in requests:
        assert sr["occurrencePeriod"] == {"start": start, "end": t0}


def test_a_result_drawn_at_the_start_of_the_ordered_window_counts_and_one_a_second_earlier_does_not(zone):
    name, client = zone
    t0, start = CASES[name]
    begin = datetime.fromisoformat(start)
    just_in = obs("plt", PLATELETS, 250, "10*9/L", begin.isoformat(), patient="p")
    _, component = lab_orders(client, t0, [just_in])
    assert component["status"] == "current"
    just_before = obs("plt", PLATELETS, 250, "10*9/L", _minus_one_second(begin), patient="p")
    requests, component = lab_orders(client, t0, [just_before])
    assert component["status"] == "stale" and requests  # outside the window: labs are offered again


def _minus_one_second(moment: datetime) -> str:
    return (moment.astimezone(UTC) - timedelta(seconds=1)).isoformat()


def test_a_date_only_ld_start_orders_to_the_end_of_that_day():
    with TestClient(create_app(dev_settings(service={"timezone": "America/New_York"}))) as c:
        requests, _ = lab_orders(c, "2024-03-12")
    assert requests and all(
        sr["occurrencePeriod"] == {"start": "2024-03-09T00:00:00-05:00", "end": "2024-03-12T23:59:59-04:00"}
        for sr in requests
    )


def test_with_no_planned_ld_start_the_window_has_no_end():
    """Review finding 10(a): T0 is then the moment of signing (spec §1.5), and an end at T0 would have
    passed before the lab saw the order; the orders ask for any collection from the window's first day."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("America/New_York")
    with TestClient(create_app(dev_settings(service={"timezone": "America/New_York"}))) as c:
        before = datetime.now(zone)
        requests, _ = lab_orders(c, None)
        after = datetime.now(zone)
    first_days = {(moment.date() - timedelta(days=3)).isoformat() for moment in (before, after)}
    assert requests
    for sr in requests:
        period = sr["occurrencePeriod"]
        assert set(period) == {"start"}
        assert period["start"][:10] in first_days and period["start"][10:19] == "T00:00:00"
