"""The code tables of clinical-spec §5, loaded once from ``data/valuesets.json``.

The file is versioned data, not code: a CAR-T program audits it, and a site extends it through
configuration (``extra_loinc``, ``extra_ld_rxnorm``) instead of editing it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

# LOINC groups → the analyte they report and their preference tier (0 = primary). A fallback
# tier is used only when no primary result exists in the same time category (spec §5.1).
_GROUP_ROLE: dict[str, tuple[str, int]] = {
    "anc": ("anc", 0),
    "seg_abs": ("seg_abs", 0),
    "band_abs": ("band_abs", 0),
    "neut_pct": ("neut_pct", 0),
    "seg_pct": ("seg_pct", 0),
    "band_pct": ("band_pct", 0),
    "wbc": ("wbc", 0),
    "hemoglobin": ("hemoglobin", 0),
    "hemoglobin_fallback": ("hemoglobin", 1),
    "platelets": ("platelets", 0),
    "crp": ("crp", 0),
    "crp_fallback": ("crp", 1),
    "crp_molar": ("crp", 2),
    "ferritin": ("ferritin", 0),
    "ldh": ("ldh", 0),
    "creatinine": ("creatinine", 0),
}

# Prefetch keys: one search per analyte group, so that one `_count` is shared only by codes of
# the same analyte (a single `_count` across an OR-list counts results in total, not per code).
PREFETCH_GROUPS: dict[str, tuple[str, ...]] = {
    "anc": ("anc", "seg_abs", "band_abs", "neut_pct", "seg_pct", "band_pct", "wbc"),
    "hemoglobin": ("hemoglobin", "hemoglobin_fallback"),
    "platelets": ("platelets",),
    "crp": ("crp", "crp_fallback", "crp_molar"),
    "ferritin": ("ferritin",),
    "ldh": ("ldh",),
    "creatinine": ("creatinine",),
}


@dataclass(frozen=True)
class LabCode:
    analyte: str
    tier: int


@dataclass(frozen=True)
class RouteMarks:
    """What marks a route or dose form: codes of routes and dose forms (system, code), RxNorm codes of
    products of that form, and whole words or phrases (routes.py reads an order for them)."""

    codes: frozenset[tuple[str, str]] = frozenset()
    rxnorm: frozenset[str] = frozenset()
    words: re.Pattern[str] = re.compile(r"(?!)")
    # A dosage route's whole text, lower case, without dots: abbreviations too short to be read inside other
    # text ("ou", "o.u.").
    route_texts: frozenset[str] = frozenset()
    # Phrases that contain a marking word but say the opposite ("Nasal-Gastric tube", "gel capsule"): taken
    # out of a text before its words are read.
    unless: re.Pattern[str] | None = None


@dataclass(frozen=True)
class DoseForms:
    """What marks an order of an LD drug as oral (not LD) or as intravenous (see `ld_oral_forms` in the file)."""

    oral: RouteMarks = RouteMarks()
    intravenous: RouteMarks = RouteMarks()


def _phrases(words: list[str]) -> re.Pattern[str]:
    # Whole words or phrases, case-insensitive ("po" not in "poly"; "p.o." and "by  mouth" too).
    alternatives = sorted((r"\s+".join(map(re.escape, w.lower().split())) for w in words), key=len, reverse=True)
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(alternatives) + r")(?![a-z0-9])", re.IGNORECASE)


def _codes(entries: list[Mapping[str, Any]]) -> frozenset[tuple[str, str]]:
    return frozenset((c["system"], c["code"]) for c in entries)


def _dose_forms(raw: Mapping[str, Any]) -> DoseForms:
    return DoseForms(
        oral=RouteMarks(_codes(raw["oral_codes"]), frozenset(raw["rxnorm"]), _phrases(raw["oral_words"])),
        intravenous=RouteMarks(_codes(raw["intravenous_codes"]), frozenset(), _phrases(raw["intravenous_words"])),
    )


def _local_use(raw: Mapping[str, Any]) -> RouteMarks:
    return RouteMarks(
        _codes(raw["codes"]),
        frozenset(),
        _phrases(raw["words"]),
        frozenset(t.lower().replace(".", "") for t in raw["route_texts"]),
        _phrases(raw["systemic_phrases"]),
    )


@dataclass(frozen=True)
class ValueSets:
    version: str
    lab_codes: Mapping[str, LabCode]
    prefetch_codes: Mapping[str, tuple[str, ...]]
    ld_rxnorm: Mapping[str, str]  # RxNorm code → drug
    ld_names: Mapping[str, str]  # lower-case name → drug
    product_rxnorm: Mapping[str, str]
    product_names: Mapping[str, str]
    validated_products: frozenset[str]
    # Supportive and prophylaxis drugs by class (gcsf, antiviral, pjp, fluoroquinolone, azole):
    # class → (RxNorm code → drug) and class → (lower-case name → drug).
    drug_class_rxnorm: Mapping[str, Mapping[str, str]]
    drug_class_names: Mapping[str, Mapping[str, str]]
    # Oral forms of the LD drugs: not lymphodepletion (clinical-spec §5.2: LD agents are intravenous).
    ld_dose_forms: DoseForms = DoseForms()
    # Routes and forms for local use (cream, eye drops, inhaled): such an order does not cover a systemic
    # prophylaxis item (prophylaxis_orders.py).
    local_use: RouteMarks = RouteMarks()


def _raw() -> dict[str, Any]:
    text = resources.files("service.clinical").joinpath("data/valuesets.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


_Frozen = tuple[tuple[str, tuple[str, ...]], ...]


def _extended(table: Mapping[str, Mapping[str, Any]], extra: _Frozen, what: str) -> dict[str, list[str]]:
    """name → RxNorm codes of a shipped table, plus the site's extra codes (an unknown name is an error)."""
    codes = {name: [str(c) for c in entry["rxnorm"]] for name, entry in table.items()}
    for name, more in extra:
        if name not in codes:
            raise ValueError(f"{what} names an unknown drug: {name}")
        codes[name] += [c for c in more if c not in codes[name]]
    return codes


@lru_cache(maxsize=8)
def _build(extra_loinc: _Frozen, extra_rx: _Frozen, extra_cart: _Frozen = (), extra_drug: _Frozen = ()) -> ValueSets:
    raw = _raw()
    groups = {name: list(g["codes"]) for name, g in raw["loinc"].items()}
    excluded = {c for codes in raw["loinc_excluded"].values() for c in codes}
    for name, codes in extra_loinc:
        if name not in groups:
            raise ValueError(f"extra_loinc names an unknown group: {name}")
        if bad := sorted(set(codes) & excluded):
            # e.g. qualitative CRP or smear-estimate platelets: excluded by the spec, not by taste.
            raise ValueError(f"extra_loinc: {', '.join(bad)} excluded by clinical-spec §5.1")
        groups[name].extend(c for c in codes if c not in groups[name])

    lab_codes: dict[str, LabCode] = {}
    for name, group_codes in groups.items():
        analyte, tier = _GROUP_ROLE[name]
        for code in group_codes:
            lab_codes.setdefault(code, LabCode(analyte, tier))
    prefetch_codes = {key: tuple(c for g in members for c in groups[g]) for key, members in PREFETCH_GROUPS.items()}

    drugs = {name: dict(d) for name, d in raw["ld_drugs"].items()}
    for name, codes in extra_rx:
        if name not in drugs:
            raise ValueError(f"extra_ld_rxnorm names an unknown drug: {name}")
        drugs[name]["rxnorm"] = [*drugs[name]["rxnorm"], *codes]
    ld_rxnorm = {code: name for name, d in drugs.items() for code in d["rxnorm"]}
    ld_names = {n.lower(): name for name, d in drugs.items() for n in d["names"]}

    products = raw["cart_products"]
    product_codes = _extended(products, extra_cart, "extra_cart_rxnorm")
    classes = raw["drug_classes"]
    class_codes = _extended(
        {drug: entry for members in classes.values() for drug, entry in members.items()},
        extra_drug,
        "extra_drug_rxnorm",
    )
    return ValueSets(
        version=raw["version"],
        lab_codes=MappingProxyType(lab_codes),
        prefetch_codes=MappingProxyType(prefetch_codes),
        ld_rxnorm=MappingProxyType(ld_rxnorm),
        ld_names=MappingProxyType(ld_names),
        product_rxnorm=MappingProxyType({c: name for name, codes in product_codes.items() for c in codes}),
        product_names=MappingProxyType({n.lower(): name for name, p in products.items() for n in p["names"]}),
        validated_products=frozenset(n for n, p in products.items() if p["validated"]),
        drug_class_rxnorm=MappingProxyType(
            {k: MappingProxyType({c: d for d in m for c in class_codes[d]}) for k, m in classes.items()}
        ),
        drug_class_names=MappingProxyType(
            {k: MappingProxyType({n.lower(): d for d, e in m.items() for n in e["names"]}) for k, m in classes.items()}
        ),
        ld_dose_forms=_dose_forms(raw["ld_oral_forms"]),
        local_use=_local_use(raw["local_use_forms"]),
    )


def value_sets(
    extra_loinc: Mapping[str, list[str]] | None = None,
    extra_ld_rxnorm: Mapping[str, list[str]] | None = None,
    extra_cart_rxnorm: Mapping[str, list[str]] | None = None,
    extra_drug_rxnorm: Mapping[str, list[str]] | None = None,
) -> ValueSets:
    def freeze(m: Mapping[str, list[str]] | None) -> _Frozen:
        return tuple(sorted((k, tuple(v)) for k, v in (m or {}).items()))

    return _build(freeze(extra_loinc), freeze(extra_ld_rxnorm), freeze(extra_cart_rxnorm), freeze(extra_drug_rxnorm))
