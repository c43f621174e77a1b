"""Realistic order-select hook requests with complete prefetch, built with the helpers of tests/cases.py.

One patient, Flu/Cy LD orders (both selected) starting at T0, a Patient resource, no Conditions, no
ECOG, and
N Observations spread evenly over the seven analyte groups (ANC, hemoglobin, platelets, CRP,
ferritin, LDH, creatinine). The newest draw of each analyte is 1 day before T0 (inside the 3-day
window), older draws go back over the 30-day lookback and, for the large sizes, beyond it (the
results a real `_sort=-date` search returns). Values vary slightly per draw so that the payload is
not one repeated string.

`real_server_body(n)` is the same request as a real FHIR server returns its prefetch (issue 15):
every searchset Bundle with its id, `meta.lastUpdated` and `self` link, every entry with its
`fullUrl`, every resource with `meta` (versionId, lastUpdated, source), the codings with their
display, the category's display and the result's `issued` time (2 h after the
draw). None of these can change the answer (effective[x] is present, so `issued` is not read; no
reference range or interpretation is added); the 35-Observation request is about 30 KB.

    .venv/bin/python bench/payloads.py 35            # prints the request JSON
    .venv/bin/python bench/payloads.py 35 --real     # the real-server form
"""

from __future__ import annotations

import copy
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from tests.cases import hook_request, ld_orders, obs, prefetch_for, searchset  # noqa: E402

PATIENT = "bench-patient-1"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
# analyte: (LOINC, UCUM unit, base value); a small ripple is added per draw.
ANALYTES = {
    "anc": ("751-8", "10*9/L", 2.6),
    "hb": ("718-7", "g/dL", 11.4),
    "plt": ("777-3", "10*9/L", 190),
    "crp": ("1988-5", "mg/dL", 0.6),
    "fer": ("2276-4", "ng/mL", 380),
    "ldh": ("2532-0", "U/L", 240),
    "crea": ("2160-0", "mg/dL", 0.9),
}
# The LOINC long names a server carries as the coding's display.
DISPLAY = {
    "751-8": "Neutrophils [#/volume] in Blood by Automated count",
    "718-7": "Hemoglobin [Mass/volume] in Blood",
    "777-3": "Platelets [#/volume] in Blood by Automated count",
    "1988-5": "C reactive protein [Mass/volume] in Serum or Plasma",
    "2276-4": "Ferritin [Mass/volume] in Serum or Plasma",
    "2532-0": "Lactate dehydrogenase [Enzymatic activity/volume] in Serum or Plasma",
    "2160-0": "Creatinine [Mass/volume] in Serum or Plasma",
}
SERVER = "https://fhir.hospital.example.org/fhir"


def observations(n: int) -> list[dict]:
    """n Observations, n // 7 (+1 for the first n % 7 analytes) per analyte, newest first."""
    out: list[dict] = []
    names = list(ANALYTES)
    for i, name in enumerate(names):
        code, unit, base = ANALYTES[name]
        count = n // len(names) + (1 if i < n % len(names) else 0)
        for k in range(count):
            # Draws 1, 4, 8, 15, 25 days back for the five of the standard payload; then every 0.2 days.
            days = (1, 4, 8, 15, 25)[k] if k < 5 else 25 + (k - 4) * 0.2
            when = (T0 - timedelta(days=days, hours=3)).isoformat()
            ripple = ((k * 7 + i * 3) % 11 - 5) / 100  # -5 % .. +5 %
            value = round(base * (1 + ripple), 2)
            out.append(obs(f"{name}-{k}", code, value, unit, when, patient=PATIENT))
    return out


def order_select(n_observations: int) -> dict:
    t0 = T0.isoformat()
    prefetch = prefetch_for(observations(n_observations), PATIENT)
    prefetch["ecog"] = searchset([])  # every key of the discovery answer: complete prefetch, no fallback
    return hook_request("order-select", PATIENT, None, orders=ld_orders(PATIENT, t0), prefetch=prefetch)


def body(n_observations: int) -> bytes:
    return orjson.dumps(order_select(n_observations))


def _served_resource(resource: dict, updated: str, k: int) -> dict:
    out = {"resourceType": resource["resourceType"], "id": resource["id"]}
    out["meta"] = {"versionId": "1", "lastUpdated": updated, "source": f"#{uuid.UUID(int=k + 1).hex[-16:]}"}
    out.update((key, value) for key, value in resource.items() if key not in out)
    if out["resourceType"] == "Observation":
        out["category"][0]["coding"][0]["display"] = "Laboratory"
        coding = out["code"]["coding"][0]
        coding["display"] = DISPLAY.get(coding["code"], coding["code"])
        drawn = datetime.fromisoformat(out["effectiveDateTime"])
        out["issued"] = (drawn + timedelta(hours=2)).isoformat(timespec="milliseconds")
    return out


def as_served(prefetch: dict) -> dict:
    """The prefetch as a real FHIR server sends it (see the module's docstring)."""
    updated = (T0 - timedelta(hours=6)).isoformat(timespec="milliseconds")
    out: dict = {}
    for key, value in copy.deepcopy(prefetch).items():
        if value.get("resourceType") != "Bundle":
            out[key] = _served_resource(value, updated, len(out))
            continue
        entries = []
        for n, entry in enumerate(value.get("entry", [])):
            resource = _served_resource(entry["resource"], updated, 1000 * len(out) + n)
            path = f"{resource['resourceType']}/{resource['id']}"
            entries.append({"fullUrl": f"{SERVER}/{path}", "resource": resource, "search": entry["search"]})
        out[key] = {
            "resourceType": "Bundle",
            "id": str(uuid.UUID(int=len(out) + 1)),
            "meta": {"lastUpdated": updated},
            "type": "searchset",
            "total": len(entries),
            "link": [{"relation": "self", "url": f"{SERVER}/Observation?patient={PATIENT}&_sort=-date&key={key}"}],
            "entry": entries,
        }
    return out


def real_server_body(n_observations: int) -> bytes:
    request = order_select(n_observations)
    request["prefetch"] = as_served(request["prefetch"])
    return orjson.dumps(request)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 35
    sys.stdout.buffer.write(real_server_body(n) if "--real" in sys.argv else body(n))
