"""The site's clinical rules from its settings, for the service (`site.py`) and the cohort command.

Kept apart from `site.py`, which also builds the cards' configuration: `hematotox-cds cohort` reads only
these, and importing the card and web modules would cost it ~0.4 s of start-up.
"""

from __future__ import annotations

from decimal import Decimal
from zoneinfo import ZoneInfo

from service.clinical.labs import LabRules
from service.clinical.valuesets import ValueSets, value_sets
from service.cohort.config import CohortRules
from service.web.settings import Settings


def site_value_sets(s: Settings) -> ValueSets:
    c = s.clinical
    return value_sets(c.extra_loinc, c.extra_ld_rxnorm, c.extra_cart_rxnorm, c.extra_drug_rxnorm)


def lab_rules(s: Settings) -> LabRules:
    c = s.clinical
    return LabRules(
        tz=ZoneInfo(s.service.timezone),
        lookback_days=c.lookback_days,
        inclusive_boundaries=c.inclusive_boundaries,
        accept_preliminary=c.accept_preliminary,
        # str() first: a TOML float such as 0.1 must become Decimal("0.1"), not its binary expansion.
        configured_factors={k: Decimal(str(v)) for k, v in c.unit_factors.items()},
    )


def ferritin_uln(s: Settings) -> Decimal | None:
    uln = s.clinical.ferritin_uln_ng_ml
    return None if uln is None else Decimal(str(uln))


def infusion_procedure_codes(s: Settings) -> frozenset[tuple[str, str]]:
    """`system|code` of the Procedures that mark a CAR-T infusion (§9.2), as (system, code)."""
    codes = s.follow_up.infusion_procedure_codes
    return frozenset((system, code) for system, _, code in (c.partition("|") for c in codes))


def cohort_rules_from_settings(s: Settings) -> CohortRules:
    """The same clinical configuration for `hematotox-cds cohort`, in the picklable form its workers need.
    Its value sets are built here, so that a bad site extension fails at start (ValueError), not in each
    worker."""
    c = s.clinical
    rules = CohortRules(
        rules=lab_rules(s),
        ferritin_uln=ferritin_uln(s),
        m_easix_crp_mg_per_l=s.recommendations.m_easix_crp_mg_per_l,
        extra_diabetes_snomed=frozenset(c.extra_diabetes_snomed),
        extra_loinc=c.extra_loinc,
        extra_ld_rxnorm=c.extra_ld_rxnorm,
        extra_cart_rxnorm=c.extra_cart_rxnorm,
        extra_drug_rxnorm=c.extra_drug_rxnorm,
        procedure_codes=infusion_procedure_codes(s),
    )
    _ = rules.vs
    return rules
