"""The seed's own figures, printed beside the site's (Rejeski et al. 2023, J Hematol Oncol [SEED-M]:
Table 2 and Fig. 1A–D; 113 myeloma patients, HT-low n = 63, HT-high n = 50)."""

from __future__ import annotations

from typing import Any

SOURCE = "Rejeski et al., J Hematol Oncol 2023 (doi 10.1186/s13045-023-01465-x), Table 2 and Fig. 1"
N_LOW, N_HIGH = 63, 50

# measure → (label, low n, low %, high n, high %, p as printed); None where the paper has no such row.
Ref = tuple[str, int | None, str | None, int | None, str | None, str | None]
_ST, _SA, _SN = (
    "Severe thrombocytopenia (PLT < 50 G/L)",
    "Severe anemia (Hb < 8 g/dL; paper: or transfusion)",
    "Severe neutropenia",
)
TABLE2: dict[str, Ref] = {
    "severe_thrombocytopenia_early": (
        f"{_ST}, day 0–30",
        17,
        "27.0",
        39,
        "78",
        "<0.0001",
    ),
    "severe_thrombocytopenia_late": (
        f"{_ST}, day 31–100",
        4,
        "6.3",
        28,
        "56",
        "<0.0001",
    ),
    "severe_anemia_early": (
        f"{_SA}, day 0–30",
        14,
        "22.2",
        42,
        "84",
        "<0.0001",
    ),
    "severe_anemia_late": (
        f"{_SA}, day 31–100",
        6,
        "9.5",
        24,
        "48",
        "<0.0001",
    ),
    "severe_neutropenia_early": ("Severe neutropenia (ANC < 500/µL), day 0–30", 40, "63.5", 42, "84", "0.02"),
    "severe_neutropenia_late": ("Severe neutropenia (ANC < 500/µL), day 31–100", 4, "6.3", 18, "36", "<0.0001"),
    "protracted_severe_neutropenia": (
        "Protracted severe (ANC < 500/µL ≥ 7 days)",
        5,
        "7.9",
        23,
        "46",
        "<0.0001",
    ),
    "profound_neutropenia": ("Profound neutropenia (ANC < 100/µL), day 0–100", 12, "19.0", 21, "42", "0.01"),
    "protracted_profound_neutropenia": (
        "Protracted profound (ANC < 100/µL ≥ 7 days)",
        0,
        "0",
        7,
        "14",
        "0.003",
    ),
    "prolonged_neutropenia": ("Prolonged neutropenia (ANC < 1000/µL on day ≥ 21)", 21, "33.3", 36, "72", "<0.0001"),
    "severe_neutropenia_14": (
        "Severe neutropenia ≥ 14 days (d0–60; Fig. 1D)",
        None,
        None,
        None,
        None,
        None,
    ),
}

PHENOTYPES: dict[str, Any] = {
    "low": {"quick": (39, "61.9"), "intermittent": (22, "34.9"), "aplastic": (2, "3.2")},
    "high": {"quick": (6, "12"), "intermittent": (28, "56"), "aplastic": (16, "32")},
    "p": "<0.0001",
}
FIG1B = {"medianLow": 3, "medianHigh": 9, "p": "<0.0001", "test": "Mann–Whitney U"}
FIG1C = {"spearmanR": 0.49, "p": "<0.0001", "slopeDaysPerPoint": 2.48}
FIG1D = {"auc": 0.82, "p": "<0.0001", "sensitivityPct": 86, "specificityPct": 65}


def as_json() -> dict[str, Any]:
    return {
        "source": SOURCE,
        "nLow": N_LOW,
        "nHigh": N_HIGH,
        "table2": {
            k: {"label": v[0], "lowN": v[1], "lowPct": v[2], "highN": v[3], "highPct": v[4], "p": v[5]}
            for k, v in TABLE2.items()
        },
        "phenotypes": {g: {ph: {"n": n, "pct": pct} for ph, (n, pct) in PHENOTYPES[g].items()} for g in ("low", "high")}
        | {"p": PHENOTYPES["p"]},
        "fig1b": FIG1B,
        "fig1c": FIG1C,
        "fig1d": FIG1D,
    }
