"""What a card may recommend at the LD order, with source and strength (clinical-spec §4).

The table is the audited content; `applicable()` is the only logic: which items apply to a
patient's HT group and NRM flags. Strength codes: G guideline/consensus, P primary-study author
suggestion, X our extrapolation (said as "local protocol / extrapolated").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Strength = Literal["G", "P", "X"]
STRENGTH_WORDS = {
    "G": "Guideline / consensus",
    "P": "Primary study, author suggestion (hypothesis-level, not a guideline)",
    "X": "Our extrapolation: local protocol, not from a source",
}

ICAHT = ("EHA/EBMT ICAHT recommendations, Blood 2023 (Table 3)", "https://doi.org/10.1182/blood.2023020578")
REJESKI = (
    "Rejeski et al., J Hematol Oncol 2023 (CAR-HEMATOTOX, myeloma)",
    "https://doi.org/10.1186/s13045-023-01465-x",
)
LEMOINE = ("Lemoine et al., Blood Adv 2023 (DESCAR-T NRM)", "https://doi.org/10.1182/bloodadvances.2023010624")
ASH_SAP = ("ASH-SAP infection prophylaxis table", "https://ash-sap.org/view-large/12050824")
LOCAL = ("hematotox-cds rules (local protocol default)", "https://doi.org/10.1182/blood.2023020578")
# How a card's numbered references name each source.
SHORT_SOURCE = {ICAHT: "ICAHT 2023", REJESKI: "Rejeski 2023", LEMOINE: "DESCAR-T", ASH_SAP: "ASH-SAP"}

# Which patients an item is for: an HT group, every LD order, or an NRM flag.
Audience = Literal["high", "low", "all", "diabetes", "ferritin"]


@dataclass(frozen=True)
class Recommendation:
    id: str
    audience: Audience
    title: str
    text: str
    strength: Strength
    source: tuple[str, str]
    # A one-click order that goes with the item: "gcsf", "antiviral", "monitoring"; None = text only.
    order: str | None = None
    # The item in one card line (the full `text` is the rationale behind the card's link).
    short: str = ""
    # Drug classes (value-set `drug_classes`) whose order on the chart the item reports.
    drugs: tuple[str, ...] = ()
    # The line once its drug is on order (what must still be said: a caveat, "unproven"); "" = `short`.
    ordered: str = ""
    # A part of the item that a second source backs with its own strength: (part, strength, source).
    also: tuple[tuple[str, Strength, tuple[str, str]], ...] = ()


TABLE: tuple[Recommendation, ...] = (
    Recommendation(
        "R1",
        "high",
        "G-CSF from day +2",
        "Consider prophylactic G-CSF from day +2 after infusion (filgrastim 5 µg/kg once daily): "
        "reduces febrile neutropenia without more severe CRS or ICANS.",
        "G",
        ICAHT,
        "gcsf",
        short="G-CSF from day +2 (filgrastim 5 µg/kg daily)",
        drugs=("gcsf",),
        ordered="G-CSF from day +2",
    ),
    Recommendation(
        "R2",
        "high",
        "Antibacterial prophylaxis once ANC <500/µL",
        "A fluoroquinolone (levofloxacin or ciprofloxacin) may be considered once ANC <500/µL. "
        "Caution with MDR colonisation or high local MDR Gram-negative prevalence.",
        "G",
        ICAHT,
        short="Fluoroquinolone once ANC <500/µL; caution if MDR-colonised",
        drugs=("fluoroquinolone",),
        ordered="Fluoroquinolone once ANC <500/µL, caution if MDR",
    ),
    Recommendation(
        "R3",
        "high",
        "Intensified monitoring",
        "High HT score: intensified monitoring, anti-infective prophylaxis and early G-CSF likely benefit.",
        "P",
        REJESKI,
        "monitoring",
        short="Intensified monitoring",
    ),
    Recommendation(
        "R4",
        "high",
        "Stem-cell boost awareness",
        "Be aware a CD34+ stem-cell boost may be needed: check backup product availability.",
        "P",
        REJESKI,
        short="CD34+ boost: check backup product",
    ),
    Recommendation(
        "R5",
        "high",
        "Broad prophylaxis (mould-active azole + fluoroquinolone)",
        "Broad early prophylaxis may reduce severe infections; unproven, prospective studies are needed.",
        "P",
        REJESKI,
        short="Broad azole + fluoroquinolone: unproven",
        drugs=("azole", "fluoroquinolone"),
        ordered="Broad azole + fluoroquinolone: unproven",
    ),
    Recommendation(
        "R1L",
        "low",
        "G-CSF probably not necessary",
        "Low ICAHT risk: prophylactic G-CSF probably not necessary.",
        "G",
        ICAHT,
        short="G-CSF probably not necessary",
        drugs=("gcsf",),
    ),
    Recommendation(
        "R2L",
        "low",
        "No antibacterial prophylaxis",
        "Low ICAHT risk: antibacterial prophylaxis not recommended.",
        "G",
        ICAHT,
        short="Antibacterial prophylaxis not recommended",
        drugs=("fluoroquinolone",),
    ),
    Recommendation(
        "R3L",
        "low",
        "Antibiotic-sparing / outpatient may be explored",
        "HT-low patients are a population in which antibiotic-sparing measures and outpatient "
        "CAR-T administration may be explored.",
        "P",
        REJESKI,
        short="Antibiotic-sparing, outpatient CAR-T may be explored",
    ),
    Recommendation(
        "R6",
        "all",
        "HSV/VZV prophylaxis from LD",
        "All patients: valacyclovir 500 mg twice daily (or acyclovir 800 mg) from LD until 1 year "
        "after infusion and/or CD4+ >0.2 ×10⁹/L.",
        "G",
        ICAHT,
        "antiviral",
        short="HSV/VZV: valacyclovir from LD to ≥1 y and CD4 >200/µL",
        drugs=("antiviral",),
        ordered="HSV/VZV",
    ),
    Recommendation(
        "R7",
        "all",
        "PJP prophylaxis",
        "All patients: trimethoprim-sulfamethoxazole for 12–18 months after infusion, at least "
        "until CD4 >200/µL. Start date per local protocol (myelosuppressive).",
        "G",
        ASH_SAP,
        short="PJP: trimethoprim-sulfamethoxazole, start per local protocol",
        drugs=("pjp",),
        ordered="PJP",
    ),
    Recommendation(
        "R8",
        "all",
        "Irradiated blood products",
        "Irradiated blood products from 7 days before leukapheresis until at least 90 days after "
        "infusion (fludarabine).",
        "G",
        ICAHT,
        short="Irradiated blood products to ≥90 d after infusion",
    ),
    Recommendation(
        "R9",
        "all",
        "Antifungal prophylaxis if prolonged neutropenia or steroids",
        "Reminder: fluconazole or posaconazole during severe prolonged neutropenia (ANC <0.5 "
        "×10⁹/L) or prolonged steroids, after infusion.",
        "G",
        ASH_SAP,
        short="Azole if prolonged neutropenia or steroids",
        drugs=("azole",),
        ordered="Azole",
    ),
    Recommendation(
        "R10",
        "all",
        "IgG monitoring",
        "After infusion: check IgG (e.g. every 4 weeks); IVIG 400–500 mg/kg for IgG ≤400 mg/dL with infections.",
        "G",
        ASH_SAP,
        short="IgG 4-weekly after; IVIG if ≤400 mg/dL + infections",
    ),
    Recommendation(
        "R11",
        "all",
        "COVID-19 vaccination",
        "Encourage COVID-19 vaccination before and after CAR-T (series repeated ≥3 months after); "
        "severe COVID-19 occurs even if vaccinated.",
        "P",
        LEMOINE,
        short="COVID-19 vaccination before and ≥3 mo after",
        # clinical-spec §4 R11: vaccination P (DESCAR-T authors) + G (ASH-SAP: series repeated ≥3 months after).
        also=(("timing", "G", ASH_SAP),),
    ),
    Recommendation(
        "R13",
        "diabetes",
        "Diabetes: NRM risk factor",
        "Diabetes is an independent NRM risk factor (OR 4.4), strongest for infectious NRM "
        "(OR 8.1). Whether glycaemic control reduces it is unstudied; steroids for CRS/ICANS may "
        "worsen glycaemia (extrapolated).",
        "P",
        LEMOINE,
        short="Diabetes: NRM OR 4.4 (infectious 8.1); steroids raise glucose (X)",
    ),
    Recommendation(
        "R14",
        "ferritin",
        "Elevated ferritin: NRM risk factor",
        "Elevated ferritin at LD is an independent NRM risk factor (OR 2.7). No management is "
        "recommended by the sources.",
        "P",
        LEMOINE,
        short="Elevated ferritin: NRM OR 2.7; no management advised",
    ),
)
BY_ID = {r.id: r for r in TABLE}


def applicable(
    group: str, diabetes: bool | None, ferritin: bool | None, disabled: frozenset[str], indeterminate_as_high: bool
) -> tuple[list[Recommendation], list[Recommendation]]:
    """(items that apply, HT-high items pending the missing labs).

    HT-low never suppresses the items for all patients. An indeterminate group shows the HT-high
    items as pending (text only) unless the site chose to treat it as possible HT-high [X].
    """
    audience = {"all"}
    pending: list[Recommendation] = []
    if group == "high" or (group == "indeterminate" and indeterminate_as_high):
        audience.add("high")
    elif group == "low":
        audience.add("low")
    else:
        pending = [r for r in TABLE if r.audience == "high" and r.id not in disabled]
    if diabetes:
        audience.add("diabetes")
    if ferritin:
        audience.add("ferritin")
    items = [r for r in TABLE if r.audience in audience and r.id not in disabled]
    return items, pending
