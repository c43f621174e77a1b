"""Realistic order-select hook requests with complete prefetch, built with the helpers of tests/cases.py.

One patient, Flu/Cy LD orders (both selected) starting at T0, a Patient resource, no Conditions, no
ECOG, and
N Observations spread evenly over the seven analyte groups (ANC, hemoglobin, platelets, CRP,
ferritin, LDH, creatinine). The newest draw of each analyte is 1 day before T0 (inside the 3-day
window), older draws go back over the 30-day lookback and, for the large sizes, beyond it (the
results a real `_sort=-date` search returns). Values vary slightly per draw so that the payload is
not one repeated string.

    .venv/bin/python bench/payloads.py 35     # prints the request JSON
"""

from __future__ import annotations

import sys
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


if __name__ == "__main__":
    sys.stdout.buffer.write(body(int(sys.argv[1]) if len(sys.argv) > 1 else 35))
